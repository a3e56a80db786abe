"""Walk every URL the platform serves: only the reviewed views are exempt from Django's CSRF check, and a
forged POST (a signed-in staff member's cookies, nothing else) is refused everywhere."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve

pytestmark = pytest.mark.django_db

# Views without Django's CSRF check, each with the reason it is safe. Anything new here needs a review.
REVIEWED_EXEMPT = {
    # Shoptet calls these; a browser's cookies mean nothing to them.
    "shoptet-install": "GET only; the one-time code is the proof",
    "shoptet-webhooks": "every body is verified against the installation's HMAC signature key",
    # Shown inside Shoptet's iframe, where browsers drop third-party cookies: forms carry the login's own
    # form token and the origin is checked instead (addon.auth.check_form).
    "addon-settings": "GET only; identity proven through Shoptet's basic_eshop OAuth",
    "addon-overview": "GET only; session token in the URL",
    "addon-progress": "GET only; session token in the URL",
    "addon-resync": "POST with the login's form token and an origin check",
    "addon-deliveries": "GET only; session token in the URL",
    "addon-preferences": "POST with the login's form token and an origin check",
    # DRF exempts its views and authenticates with the Authorization header only (never a cookie);
    # the schema views also accept the admin session, for which DRF enforces CSRF itself.
    "installation-list": "REST API, token in a header",
    "installation-detail": "REST API, token in a header",
    "webhook-delivery-list": "REST API, token in a header",
    "order-list": "REST API, token in a header",
    "order-detail": "REST API, token in a header",
    "invoice-list": "REST API, token in a header",
    "invoice-detail": "REST API, token in a header",
    "sync-job-list": "REST API, token in a header",
    "sync": "REST API, token in a header",
    "api-schema": "GET only; token or admin session (DRF's own CSRF check)",
    "api-schema-ui": "GET only; admin session",
}


def walk(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, Callable[..., Any], str | None]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern.callback, pattern.name


def sample_path(route: str) -> str:
    """A concrete path the route matches: converters and regex groups filled with a plausible value."""
    path = re.sub(
        r"\(\?P<\w+>([^)]*)\)", lambda group: group.group(1).split("|")[0] if "|" in group.group(1) else "1", route
    )
    path = re.sub(r"<(?:\w+:)?\w+>", "1", path)
    return "/" + path.replace("^", "").replace("$", "")


ROUTES = sorted({(sample_path(route), name or route) for route, _, name in walk(get_resolver().url_patterns)})


def test_the_csrf_exempt_views_are_exactly_the_reviewed_ones() -> None:
    exempt = {
        name or route for route, view, name in walk(get_resolver().url_patterns) if getattr(view, "csrf_exempt", False)
    }

    assert exempt == set(REVIEWED_EXEMPT)


def test_every_route_is_walked() -> None:
    assert len(ROUTES) > 100  # the admin alone has over a hundred
    for path, _ in ROUTES:
        resolve(path)


@pytest.mark.parametrize(("path", "name"), [route for route in ROUTES if route[1] not in REVIEWED_EXEMPT])
def test_a_forged_post_is_refused_by_the_csrf_check(admin_user: Any, path: str, name: str) -> None:
    forger = Client(enforce_csrf_checks=True)
    forger.force_login(admin_user)

    response = forger.post(path, {"action": "rerun_onboarding", "_selected_action": "1", "index": "0"})

    assert response.status_code == 403, path
    assert b"CSRF verification failed" in response.content


@pytest.mark.parametrize(("path", "name"), [route for route in ROUTES if route[1] in REVIEWED_EXEMPT])
def test_a_forged_post_to_an_exempt_view_is_refused_too(
    admin_user: Any, installation: Any, path: str, name: str
) -> None:
    forger = Client(enforce_csrf_checks=True)
    forger.force_login(admin_user)

    response = forger.post(
        path.replace("/1/", f"/{installation.eshop_id}/"), {"resource": "orders", "mode": "snapshot"}
    )

    assert 400 <= response.status_code < 500, (path, response.status_code)
    assert not installation.sync_jobs.exists()
