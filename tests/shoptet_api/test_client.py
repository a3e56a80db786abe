"""The client's retry rules, against the fake Shoptet with injected faults."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from installations.models import Installation
from shoptet_api import errors
from shoptet_api.client import ShoptetClient
from shoptet_api.errors import parse_retry_after
from tests.fakes.shoptet import FakeShoptet

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_backoff")]

ORDERS = r"/api/orders/.+"
ESHOP = r"/api/eshop"


def first_order_code(fake: FakeShoptet, installation: Installation) -> str:
    return next(iter(fake.eshops[installation.eshop_id].orders))


def test_expired_token_is_replaced_once_and_the_call_retried(
    installation: Installation, fake_shoptet: FakeShoptet
) -> None:
    client = ShoptetClient(installation)
    client.get_eshop()
    fake_shoptet.expire_api_tokens(installation.eshop_id)

    assert client.get_eshop()["contactInformation"]["eshopId"] == installation.eshop_id
    assert fake_shoptet.stats(installation.eshop_id)["tokens_minted"] == 2


def test_a_second_expired_token_answer_is_raised(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    fake_shoptet.add_fault("GET", ESHOP, 401, times=2, error_code="expired-token", message="Token is expired.")

    with pytest.raises(errors.Unauthorized) as raised:
        ShoptetClient(installation).get_eshop()

    assert raised.value.error_code == "expired-token"
    assert fake_shoptet.request_count("GET", ESHOP) == 2


def test_invalid_token_is_not_retried(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    fake_shoptet.add_fault("GET", ESHOP, 401, error_code="invalid-token", message="Invalid access token")

    with pytest.raises(errors.Unauthorized):
        ShoptetClient(installation).get_eshop()

    assert fake_shoptet.request_count("GET", ESHOP) == 1


def test_rate_limit_waits_for_retry_after(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    fake_shoptet.add_fault("GET", ESHOP, 429, headers={"Retry-After": "1"})

    started = datetime.now(UTC)
    ShoptetClient(installation).get_eshop()

    assert datetime.now(UTC) - started >= timedelta(seconds=1)
    assert fake_shoptet.request_count("GET", ESHOP) == 2


def test_rate_limit_on_a_write_is_retried(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    fake_shoptet.add_fault("POST", r"/api/webhooks/renew-signature-key", 429, headers={"Retry-After": "0"})

    key = ShoptetClient(installation).renew_signature_key()

    assert key == fake_shoptet.eshops[installation.eshop_id].signature_key
    assert fake_shoptet.request_count("POST", r"/api/webhooks/renew-signature-key") == 2


def test_a_long_retry_after_is_left_to_the_task(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    fake_shoptet.add_fault("GET", ESHOP, 429, headers={"Retry-After": "3600"})

    with pytest.raises(errors.RateLimited) as raised:
        ShoptetClient(installation).get_eshop()

    assert raised.value.retry_after == 3600
    assert fake_shoptet.request_count("GET", ESHOP) == 1


def test_locked_write_is_retried(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    fake_shoptet.add_fault("POST", r"/api/webhooks/renew-signature-key", 423, error_code="locked", message="Locked")

    ShoptetClient(installation).renew_signature_key()

    assert fake_shoptet.request_count("POST", r"/api/webhooks/renew-signature-key") == 2


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_on_reads_back_off_and_retry(
    installation: Installation, fake_shoptet: FakeShoptet, status: int
) -> None:
    fake_shoptet.add_fault("GET", ESHOP, status, times=3)

    ShoptetClient(installation).get_eshop()

    assert fake_shoptet.request_count("GET", ESHOP) == 4


def test_server_errors_give_up_after_the_attempt_limit(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    fake_shoptet.add_fault("GET", ESHOP, 500, times=10)

    with pytest.raises(errors.ServerError):
        ShoptetClient(installation, max_attempts=3).get_eshop()

    assert fake_shoptet.request_count("GET", ESHOP) == 3


def test_server_error_on_an_unsafe_write_is_not_retried(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    fake_shoptet.add_fault("POST", r"/api/webhooks/renew-signature-key", 500)

    with pytest.raises(errors.ServerError):
        ShoptetClient(installation).renew_signature_key()

    assert fake_shoptet.request_count("POST", r"/api/webhooks/renew-signature-key") == 1


def test_server_error_on_an_idempotent_write_is_retried(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    client = ShoptetClient(installation)
    created = client.create_webhooks([{"event": "order:create", "url": "http://testserver/shoptet/webhooks/"}])
    fake_shoptet.add_fault("PATCH", r"/api/webhooks/\d+", 503)

    client.update_webhook(created[0]["id"], url="http://testserver/other/")

    assert fake_shoptet.request_count("PATCH", r"/api/webhooks/\d+") == 2


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, errors.BadRequest),
        (403, errors.Forbidden),
        (404, errors.NotFound),
        (409, errors.Conflict),
        (413, errors.PayloadTooLarge),
        (422, errors.Unprocessable),
    ],
)
def test_client_errors_are_typed_and_not_retried(
    installation: Installation, fake_shoptet: FakeShoptet, status: int, error_class: type[errors.APIError]
) -> None:
    fake_shoptet.add_fault("GET", ESHOP, status, error_code="some-error", message="Something is wrong")

    with pytest.raises(error_class) as raised:
        ShoptetClient(installation).get_eshop()

    assert (raised.value.http_status, raised.value.error_code, raised.value.message) == (
        status,
        "some-error",
        "Something is wrong",
    )
    assert raised.value.request_id
    assert fake_shoptet.request_count("GET", ESHOP) == 1


def test_unknown_order_is_not_found(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    with pytest.raises(errors.NotFound) as raised:
        ShoptetClient(installation).get_order("does-not-exist")

    assert raised.value.error_code == "order-not-found"


def test_order_codes_with_a_slash_are_quoted(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    code = fake_shoptet.create_order(installation.eshop_id, code="2026/000777")

    assert ShoptetClient(installation).get_order(code)["code"] == "2026/000777"


def test_connection_refused_is_retried_then_raised(installation: Installation, settings) -> None:  # type: ignore[no-untyped-def]
    settings.SHOPTET_API_URL = "http://127.0.0.1:9"

    with pytest.raises(errors.TransportError):
        ShoptetClient(installation, max_attempts=2).get_eshop()


def test_non_json_answer_is_a_transport_error(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    fake_shoptet.add_fault("GET", ESHOP, 200, body="<html>maintenance</html>")

    with pytest.raises(errors.TransportError, match="not JSON"):
        ShoptetClient(installation, max_attempts=1).get_eshop()


def test_paging_walks_every_page(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    for _ in range(7):
        fake_shoptet.create_order(installation.eshop_id)
    expected = set(fake_shoptet.eshops[installation.eshop_id].orders)

    codes = [
        order["code"] for order in ShoptetClient(installation).paginate("/api/orders", key="orders", items_per_page=5)
    ]

    assert sorted(codes) == sorted(expected)
    assert fake_shoptet.request_count("GET", r"/api/orders") == 3


def test_deprecation_is_logged_once_per_endpoint(
    installation: Installation, fake_shoptet: FakeShoptet, caplog: pytest.LogCaptureFixture
) -> None:
    fake_shoptet.add_fault(
        "GET", ESHOP, 0, times=2, headers={"X-Shoptet-Deprecated": "yes", "Sunset": "Sat, 01 Jan 2028 00:00:00 GMT"}
    )
    client = ShoptetClient(installation)

    with caplog.at_level(logging.WARNING, logger="shoptet_api.client"):
        client.get_eshop()
        client.get_eshop()

    assert [r.getMessage() for r in caplog.records if "deprecation" in r.getMessage()] == [
        "shoptet api deprecation endpoint=GET /api/eshop deprecated=yes sunset=Sat, 01 Jan 2028 00:00:00 GMT"
    ]


def test_inactive_installations_make_no_calls(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    installation.transition_to(Installation.Status.SUSPENDED, cause="test")

    with pytest.raises(errors.InstallationInactive):
        ShoptetClient(installation).get_eshop()

    assert fake_shoptet.stats(installation.eshop_id)["tokens_minted"] == 0


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    in_a_minute = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)

    assert parse_retry_after("7") == 7
    assert 58 <= (parse_retry_after(in_a_minute) or 0) <= 60
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT") == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
