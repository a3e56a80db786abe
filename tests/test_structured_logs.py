"""Log lines are JSON, carry the e-shop id when they concern one, and mask anything shaped like a secret."""

from __future__ import annotations

import json
import logging

import pytest

from config.logs import EshopContextFilter, JsonLineFormatter, bound_eshop, mask_credentials
from installations.models import Installation
from shoptet_api.client import ShoptetClient
from tests.fakes.shoptet import FakeShoptet


def formatted(message: str, *args: object, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("platform.test", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    EshopContextFilter().filter(record)
    return json.loads(JsonLineFormatter().format(record))  # type: ignore[no-any-return]


def test_a_line_is_json_with_the_bound_eshop() -> None:
    with bound_eshop(222651):
        line = formatted("imported %s orders", 12)

    assert line["message"] == "imported 12 orders"
    assert line["eshop_id"] == 222651
    assert (line["level"], line["logger"]) == ("INFO", "platform.test")
    assert "eshop_id" not in formatted("outside any e-shop")


def test_explicit_extra_fields_are_kept() -> None:
    line = formatted("job finished", eshop_id=315185, job_id="3ax1844")

    assert (line["eshop_id"], line["job_id"]) == (315185, "3ax1844")


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer 7f1c2e9a8b7c6d5e4f3a2b1c0d9e8f7a",
        'headers={"Shoptet-Access-Token": "222651-a-771-UeStXmRG103SU97mQiX"}',
        '{"access_token": "abcdefghijklmnopqrstuvwxyz012345", "expires_in": 1800}',
        "GET /shoptet/install/?code=5f0e2d0f7b6a4c9e8d7c6b5a4f3e2d1c",
        "signatureKey=8a5e881b19ad6cc0bc986587b22e30be",
    ],
)
def test_credentials_are_masked(text: str) -> None:
    masked = mask_credentials(text)

    assert "[masked]" in masked
    assert not any(secret in masked for secret in ("7f1c2e9a", "UeStXmRG", "abcdefghij", "5f0e2d0f", "8a5e881b"))


def test_client_records_carry_the_eshop_id(
    installation: Installation, fake_shoptet: FakeShoptet, caplog: pytest.LogCaptureFixture, db: None
) -> None:
    caplog.handler.addFilter(EshopContextFilter())
    with caplog.at_level(logging.INFO, logger="shoptet_api"):
        ShoptetClient(installation).get_eshop()

    records = [r for r in caplog.records if r.name.startswith("shoptet_api")]
    assert records
    assert {getattr(r, "eshop_id", None) for r in records} == {installation.eshop_id}
