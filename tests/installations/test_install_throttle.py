"""The install callback spends a code exchange with our client secret only on a plausible code, and only
within its limits per source address and overall; a cache that is down never stops an install."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client

from config import metrics
from installations.models import Installation, InstallAttempt
from shoptet_api import tokens
from tests.conftest import ESHOP_ID, OTHER_ESHOP_ID
from tests.fakes.shoptet import FakeShoptet

pytestmark = pytest.mark.django_db

INSTALL_URL = "/shoptet/install/"
TOKEN_PATH = "/partner/action/ApiOAuthServer/token"
SHOPTET = "192.0.2.20"
FLOODER = "198.51.100.7"

JUNK_CODES = [
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "code with spaces",
    "tab\there",
    "line\nbreak",
    "bell\x07",
    "nul\x00",
    "٣٤٥٦",  # Arabic-Indic digits: digits to str.isdigit, no Shoptet code
    "kód",
    "a" * 513,
    'quote"',
    "semi;colon",
]
# As sent on the wire: a lone surrogate's UTF-8-like bytes, bytes that are no UTF-8.
JUNK_QUERIES = [urlencode({"code": code}) for code in JUNK_CODES] + ["code=%ED%A0%80", "code=%FF%FEab"]


def exchanges(fake: FakeShoptet) -> int:
    """Code exchanges the fake answered since this test's reset (an earlier test's late request is not logged)."""
    return sum(1 for method, path, _ in fake.stats()["log"] if method == "POST" and path == TOKEN_PATH)


def issue_code(fake: FakeShoptet, eshop_id: int) -> str:
    if eshop_id not in fake.eshops:
        fake.add_eshop(eshop_id)
    return fake.issue_install_code(eshop_id, redirect_uri=tokens.install_redirect_uri())


def refusals() -> dict[str, float]:
    return {field: value for field, value in metrics.snapshot("install_callback_refused").items()}


def refused(before: dict[str, float], reason: str) -> float:
    field = f'{{"reason": "{reason}"}}'
    return refusals().get(field, 0) - before.get(field, 0)


def test_junk_codes_are_refused_without_any_exchange_and_plausible_ones_reach_shoptet(
    client: Client, fake_shoptet: FakeShoptet
) -> None:
    before = refusals()
    # Letters, digits and URL-safe punctuation, from 1 character to twice the documented 255.
    plausible = [("AZaz09-._~+/=" * 40)[:length] for length in (1, 40, 255, 300, 512)]

    junk = [client.get(f"{INSTALL_URL}?{query}", REMOTE_ADDR=SHOPTET) for query in JUNK_QUERIES]
    tried = [client.get(INSTALL_URL, {"code": code}, REMOTE_ADDR=SHOPTET) for code in plausible]

    assert [(r.status_code, r.json()) for r in junk] == [
        (400, {"installed": False, "error": "The install code is malformed."})
    ] * len(JUNK_QUERIES)
    assert all(r.status_code == 400 and "invalid_grant" in r.json()["error"] for r in tried)
    assert exchanges(fake_shoptet) == len(plausible)
    assert Installation.objects.count() == 0
    assert refused(before, "malformed_code") == len(JUNK_QUERIES)


def test_the_51st_callback_of_a_minute_from_one_address_is_429_and_shoptet_still_installs(
    client: Client, fake_shoptet: FakeShoptet
) -> None:
    before = refusals()
    for number in range(50):
        assert client.get(INSTALL_URL, {"code": f"guessed{number}"}, REMOTE_ADDR=FLOODER).status_code == 400
    before_throttled = exchanges(fake_shoptet)

    throttled = client.get(INSTALL_URL, {"code": "guessed-again"}, REMOTE_ADDR=FLOODER)
    real = client.get(INSTALL_URL, {"code": issue_code(fake_shoptet, ESHOP_ID)}, REMOTE_ADDR=SHOPTET)

    assert throttled.status_code == 429
    assert throttled.json() == {"installed": False, "error": "Too many install requests; retry later."}
    assert 1 <= int(throttled["Retry-After"]) <= 60
    assert exchanges(fake_shoptet) == before_throttled + 1  # the real install's only
    assert real.status_code == 200
    assert Installation.objects.get().eshop_id == ESHOP_ID
    assert refused(before, "throttled_address") == 1
    # A throttled call writes nothing: the limiter is there for floods.
    assert InstallAttempt.objects.count() == 51


def test_the_global_limit_holds_across_addresses(client: Client, fake_shoptet: FakeShoptet, settings: Any) -> None:
    settings.INSTALL_CALLBACK_THROTTLE_GLOBAL = 3
    before = refusals()
    statuses = [
        client.get(INSTALL_URL, {"code": f"guessed{number}"}, REMOTE_ADDR=f"203.0.113.{number}").status_code
        for number in range(4)
    ]

    assert statuses == [400, 400, 400, 429]
    assert exchanges(fake_shoptet) == 3
    assert refused(before, "throttled_global") == 1


def test_an_install_works_while_the_cache_is_down(client: Client, fake_shoptet: FakeShoptet, settings: Any) -> None:
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",  # nothing listens on the discard port
            "OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
        }
    }

    response = client.get(INSTALL_URL, {"code": issue_code(fake_shoptet, OTHER_ESHOP_ID)}, REMOTE_ADDR=SHOPTET)

    assert response.status_code == 200
    assert Installation.objects.get().eshop_id == OTHER_ESHOP_ID


def test_behind_a_trusted_proxy_the_limit_and_the_attempt_take_the_caller_s_address(
    client: Client, fake_shoptet: FakeShoptet, settings: Any
) -> None:
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = "10.0.0.2"
    for number in range(50):
        response = client.get(
            INSTALL_URL, {"code": f"guessed{number}"}, REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=FLOODER
        )
        assert response.status_code == 400
    throttled = client.get(INSTALL_URL, {"code": "guessed-again"}, REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=FLOODER)
    real = client.get(
        INSTALL_URL, {"code": issue_code(fake_shoptet, ESHOP_ID)}, REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=SHOPTET
    )

    assert throttled.status_code == 429
    assert real.status_code == 200
    assert set(InstallAttempt.objects.values_list("remote_addr", flat=True)) == {FLOODER, SHOPTET}
