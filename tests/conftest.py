"""Shared fixtures: a fake Shoptet on loopback, and two e-shops installed through the real install flow."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.test import Client, override_settings
from rest_framework.authtoken.models import Token

from config.retries import Backoff
from installations import services
from installations.models import Installation
from shoptet_api import tokens
from tests.fakes.shoptet import FakeShoptet

ESHOP_ID = 222651
OTHER_ESHOP_ID = 315185
# Every surface refuses these as an e-shop id; int() would read the Arabic-Indic and the double-struck
# ones as 1000001, and the others as numbers or 500s.
NOT_ESHOP_IDS = [
    "²",
    "①",
    "¹²³",
    "፩",
    "\u0661\u0660\u0660\u0660\u0660\u0660\u0661",
    "\U0001d7d9\U0001d7d8\U0001d7d8\U0001d7d8\U0001d7d8\U0001d7d8\U0001d7d9",
    "-1",
    "+1",
    "1e3",
    "0x10",
    "1" * 19,
    "true",
]
# The apps whose models the REST API checks Django's permissions on.
PLATFORM_APPS = ("installations", "webhooks", "sync")


@pytest.fixture(scope="session", autouse=True)
def fast_password_hashing() -> Iterator[None]:
    """Staff users are made per test; PBKDF2's 1,000,000 rounds would cost most of a second each time.

    Only this process hashes with MD5: the platform's own processes that tests start keep the real hashers.
    """
    with override_settings(
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]
    ):
        yield


@pytest.fixture(scope="session", autouse=True)
def static_root() -> None:
    """WhiteNoise expects the collected-static folder that `make run` creates."""
    settings.STATIC_ROOT.mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session")
def fake_shoptet_server() -> Iterator[FakeShoptet]:
    fake = FakeShoptet(client_id="test-client", client_secret="test-secret")
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_shoptet(fake_shoptet_server: FakeShoptet, settings) -> Iterator[FakeShoptet]:  # type: ignore[no-untyped-def]
    """The fake, emptied, with the platform's settings pointing at it."""
    fake_shoptet_server.reset()
    settings.SHOPTET_CLIENT_ID = "test-client"
    settings.SHOPTET_CLIENT_SECRET = "test-secret"
    settings.SHOPTET_PARTNER_URL = fake_shoptet_server.partner_url
    settings.SHOPTET_API_URL = fake_shoptet_server.api_url
    settings.PUBLIC_URL = "http://testserver"
    yield fake_shoptet_server
    fake_shoptet_server.reset()


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


def install_via_fake(fake: FakeShoptet, eshop_id: int, *, orders: int = 0, invoices: int = 0) -> Installation:
    """Install an e-shop exactly as Shoptet does: a fresh code, exchanged by the install service."""
    if eshop_id not in fake.eshops:
        fake.add_eshop(eshop_id, orders=orders, invoices=invoices)
    code = fake.issue_install_code(eshop_id, redirect_uri=tokens.install_redirect_uri())
    return services.install(code=code).installation


@pytest.fixture
def installation(fake_shoptet: FakeShoptet, db: None) -> Installation:
    return install_via_fake(fake_shoptet, ESHOP_ID, orders=5, invoices=3)


@pytest.fixture
def other_installation(fake_shoptet: FakeShoptet, db: None) -> Installation:
    return install_via_fake(fake_shoptet, OTHER_ESHOP_ID, orders=4, invoices=2)


@pytest.fixture
def staff_client(django_user_model, db: None) -> Client:  # type: ignore[no-untyped-def]
    """A REST client authenticated as partner staff with a DRF token."""
    user = django_user_model.objects.create_user("staff", password="unused-password-1", is_staff=True)
    grant_platform_permissions(user)
    token = Token.objects.create(user=user)
    return Client(HTTP_AUTHORIZATION=f"Token {token.key}")


def grant_platform_permissions(user) -> None:  # type: ignore[no-untyped-def]
    """Every permission on the platform's models, as a partner's operator would hold."""
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label__in=PLATFORM_APPS))


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the client's retry rules, shrink its waits so tests do not sleep for seconds."""
    monkeypatch.setattr("shoptet_api.client.BACKOFF", Backoff(base=0.01, cap=30.0))
