"""Generated requests against every settings page: nothing answers 500 and nothing is stored.

Query strings, form bodies and headers are built from any text (lone surrogates included, sent as the
bytes a client would send), Unicode digits, deeply nested and oversized values, and the genuine token and
e-shop id mixed in so that requests get past the first checks. The form token is never the genuine one,
so every post must be refused and every table stay as it was.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from installations.models import AddonSettings, Installation, SettingsChange
from sync.models import SyncJob
from tests.addon.conftest import Login, log_in, tampered
from tests.conftest import NOT_ESHOP_IDS
from tests.fakes.shoptet import FakeShoptet
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db

# Every settings page with each method it answers (any other is a plain 405).
REQUESTS = [
    ("get", "/addon/settings/"),
    ("get", "/addon/settings/overview/"),
    ("get", "/addon/settings/progress/"),
    ("get", "/addon/settings/deliveries/"),
    ("get", "/addon/settings/preferences/"),
    ("post", "/addon/settings/preferences/"),
    ("post", "/addon/settings/resync/"),
    ("post", "/addon/settings/overview/"),
]
FIELDS = [
    "eshopId",
    "t",
    "language",
    "code",
    "state",
    "csrf",
    "resource",
    "mode",
    "saved",
    "started",
    "sync_orders",
    "sync_invoices",
    "import_since",
    "notification_email",
]
HEADERS = ["Origin", "HX-Request", "Referer", "Accept-Language", "Cookie", "Content-Type", "X-Forwarded-For"]
DEEP = ["[" * 5000, '{"a":' * 2000, "%" * 3000, "a" * 70_000, "\x00" * 100, "\ud800\udfff" * 500]

any_text = st.text(st.characters(), max_size=60)


def field_values(login: Login) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Every field the pages read: absent, genuine, or anything else, so that some requests get far."""
    genuine = {"eshopId": str(login.eshop_id), "t": login.token, "language": "en", "resource": "orders"}
    unusual = st.one_of(
        st.sampled_from([*NOT_ESHOP_IDS, tampered(login.token), f" {login.eshop_id} ", str(login.eshop_id + 1)]),
        st.sampled_from(DEEP),
        any_text,
    )

    # An e-shop id in other digits than ASCII ones is the likeliest to get far.
    digits = st.one_of(st.sampled_from(NOT_ESHOP_IDS), unusual)

    @st.composite
    def fields(draw: st.DrawFn) -> list[tuple[str, str]]:
        pairs = []
        for name in FIELDS:
            # Mostly genuine or absent, so that the checks behind the e-shop and the token get their turn too.
            kind = draw(st.sampled_from(["genuine", "genuine", "absent", "unusual"]))
            if kind == "genuine" and name in genuine:
                pairs.append((name, genuine[name]))
            elif kind == "unusual":
                pairs.append((name, draw(digits if name == "eshopId" else unusual)))
        return pairs + draw(st.lists(st.tuples(any_text, any_text), max_size=2))

    return fields()


def encoded(pairs: list[tuple[str, str]]) -> str:
    """As a client sends them: UTF-8 (lone surrogates as their raw bytes), percent-encoded."""
    return "&".join(f"{as_sent(key)}={as_sent(value)}" for key, value in pairs)


def as_sent(text: str) -> str:
    return quote_from_bytes(text.encode("utf-8", "surrogatepass"))


def header_text() -> st.SearchStrategy[str]:
    # WSGI hands headers over as latin-1 text; anything else cannot arrive.
    return st.one_of(st.text(st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=80), st.just("1"))


def state_of_everything() -> list[Any]:
    return [
        Installation.objects.count(),
        list(AddonSettings.objects.values()),
        SettingsChange.objects.count(),
        SyncJob.objects.count(),
        WebhookDelivery.objects.count(),
    ]


@pytest.mark.parametrize(("method", "path"), REQUESTS)
def test_generated_requests_never_answer_500_nor_store_anything(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation, method: str, path: str
) -> None:
    login = log_in(client, fake_shoptet, onboarded)
    before = state_of_everything()
    pairs = field_values(login)

    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        query=pairs,
        form=pairs,
        headers=st.dictionaries(st.sampled_from(HEADERS), header_text(), max_size=4),
    )
    def check(query: list[tuple[str, str]], form: list[tuple[str, str]], headers: dict[str, str]) -> None:
        url = f"{path}?{encoded(query)}"
        if method == "get":
            response = client.get(url, headers=headers)
        else:
            body = encoded(form)
            response = client.post(url, body, content_type="application/x-www-form-urlencoded", headers=headers)

        assert response.status_code != 500, (method, url, response.content[:500])
        assert state_of_everything() == before

    check()
