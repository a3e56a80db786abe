"""With every logger at DEBUG, install and failing API calls leave no token in the logs."""

from __future__ import annotations

import base64
import logging
from urllib.parse import quote

import pytest
from django.test import Client

from installations import services
from installations.models import Installation
from shoptet_api import errors, tokens
from shoptet_api.client import ShoptetClient
from tests.fakes.shoptet import FakeShoptet

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_backoff")]


def forms_of(secret: str) -> list[str]:
    return [secret, secret[:12], quote(secret, safe=""), base64.b64encode(secret.encode()).decode()[:16]]


def test_install_and_failing_calls_log_no_secret(
    client: Client, fake_shoptet: FakeShoptet, caplog: pytest.LogCaptureFixture
) -> None:
    fake_shoptet.add_eshop(222651)
    code = fake_shoptet.issue_install_code(222651, redirect_uri=tokens.install_redirect_uri())
    loggers = [logging.getLogger(name) for name in ("", "urllib3", "requests", "django", "celery")]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG):
            assert client.get("/shoptet/install/", {"code": code}).status_code == 200
            installation = Installation.objects.get()
            services.onboard(installation=installation)
            fake_shoptet.add_fault("GET", r"/api/eshop", 401, error_code="expired-token", message="Token is expired.")
            fake_shoptet.add_fault("GET", r"/api/eshop", 429, headers={"Retry-After": "0"})
            fake_shoptet.add_fault("GET", r"/api/eshop", 500)
            ShoptetClient(installation).get_eshop()
            fake_shoptet.add_fault("GET", r"/api/eshop", 500, times=10)
            with pytest.raises(errors.ServerError):
                ShoptetClient(installation, max_attempts=2).get_eshop()
    finally:
        for logger, level in zip(loggers, previous, strict=True):
            logger.setLevel(level)

    installation.refresh_from_db()
    eshop = fake_shoptet.eshops[installation.eshop_id]
    secrets = [code, installation.oauth_token, installation.webhook_signature_key, *eshop.api_tokens]
    assert len(secrets) >= 5
    logged = caplog.text + "".join(repr(record.args) for record in caplog.records)
    assert "shoptet api" in logged  # the client did log its calls
    for secret in secrets:
        for form in forms_of(secret):
            assert form not in logged
