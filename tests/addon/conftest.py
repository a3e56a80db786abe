"""Fixtures for the addon settings page: onboarded e-shops and an admin logged in the way Shoptet does it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client

from addon import auth
from installations import services
from installations.models import Installation
from tests.fakes.shoptet import FakeShoptet

ADMIN_EMAIL = "jana@eshop.example"
ADMIN_NAME = "Jana Nováková"


@dataclass(frozen=True)
class Login:
    """A logged-in admin: the page URL the entry redirected to and what it carries."""

    url: str
    eshop_id: int
    token: str

    def query(self, **changes: str) -> dict[str, str]:
        values = {key: items[0] for key, items in parse_qs(urlsplit(self.url).query).items()}
        return {**values, **changes}


@pytest.fixture
def onboarded(installation: Installation) -> Installation:
    """The e-shop after onboarding: its OAuth server URL (GET /api/eshop → urls[oauth]), signature key and
    webhook registrations (job:finished among them, so Shoptet accepts snapshots) are stored."""
    services.onboard(installation=installation)
    return Installation.objects.get(pk=installation.pk)


@pytest.fixture
def other_onboarded(other_installation: Installation) -> Installation:
    services.onboard(installation=other_installation)
    return Installation.objects.get(pk=other_installation.pk)


def log_in(
    client: Client,
    fake: FakeShoptet,
    installation: Installation,
    *,
    language: str = "en",
    email: str = ADMIN_EMAIL,
    name: str = ADMIN_NAME,
) -> Login:
    """Open the settings URL as Shoptet fills it in (`#SHOP_ID#`, `#LANGUAGE#`, `#OAUTH_CODE#`)."""
    code = fake.issue_admin_code(installation.eshop_id, email=email, name=name)
    response = client.get(
        "/addon/settings/", {"eshopId": str(installation.eshop_id), "language": language, "code": code}
    )
    assert response.status_code == 302, response.content.decode()
    url = response["Location"]
    token = parse_qs(urlsplit(url).query)["t"][0]
    assert auth.read_token(token).eshop_id == installation.eshop_id
    return Login(url=url, eshop_id=installation.eshop_id, token=token)


def form_fields(login: Login, **changes: str) -> dict[str, str]:
    """What the page's forms post: e-shop, language, session token and form token."""
    admin = auth.read_token(login.token)
    fields = {
        "eshopId": str(login.eshop_id),
        "language": admin.language,
        "t": login.token,
        "csrf": auth.form_token(admin),
    }
    return {**fields, **changes}


def tampered(token: str) -> str:
    """The token with one character in its middle changed: still well-formed, no longer genuine."""
    middle = len(token) // 2
    return f"{token[:middle]}{'A' if token[middle] != 'A' else 'B'}{token[middle + 1 :]}"


def refusal_reason(response: Any) -> str:
    """The reason code a refusal page names for support."""
    page: str = response.content.decode()
    return page.split("<code>")[1].split("</code>")[0]
