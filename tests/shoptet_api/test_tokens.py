"""API access tokens: cached, minted once, shared; Shoptet's word on the addon's state is mirrored."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections

from config import metrics
from installations.models import Installation
from shoptet_api import tokens
from shoptet_api.client import ShoptetClient
from shoptet_api.errors import AddonNotInstalled, AddonSuspended, MaximumTokensReached, OAuthError
from tests.fakes.shoptet import FakeShoptet

pytestmark = pytest.mark.django_db(transaction=True)


def test_token_is_cached_and_reused(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    first = tokens.get_access_token(installation)

    assert tokens.get_access_token(installation) == first
    assert fake_shoptet.stats(installation.eshop_id)["tokens_minted"] == 1


@pytest.mark.parametrize(("lifetime", "margin"), [(5, 1.0), (60, 12.0), (1800, 300.0), (86400, 300.0)])
def test_the_refresh_margin_scales_with_the_token_s_lifetime(lifetime: float, margin: float) -> None:
    assert tokens.refresh_margin(lifetime) == margin


def test_a_short_lived_token_is_reused_until_its_margin_then_replaced(
    installation: Installation, fake_shoptet: FakeShoptet
) -> None:
    fake_shoptet.token_ttl = 2
    short_lived = tokens.get_access_token(installation)
    assert tokens.get_access_token(installation) == short_lived

    time.sleep(2 - tokens.refresh_margin(2) + 0.1)

    assert tokens.get_access_token(installation) != short_lived
    assert fake_shoptet.stats(installation.eshop_id)["tokens_minted"] == 2


def test_at_the_token_cap_the_client_waits_for_a_free_slot_instead_of_failing(
    installation: Installation, fake_shoptet: FakeShoptet
) -> None:
    eshop = fake_shoptet.eshops[installation.eshop_id]
    fake_shoptet.token_ttl = 2
    for _ in range(fake_shoptet.max_api_tokens):
        tokens.forget_access_tokens(installation)
        tokens.get_access_token(installation)
    tokens.forget_access_tokens(installation)
    fake_shoptet.token_ttl = 1800
    waits_before = metrics.snapshot("shoptet_api_token_cap_waits")
    started = time.monotonic()

    token = tokens.get_access_token(installation)

    assert token in eshop.api_tokens
    assert 1 < time.monotonic() - started < 10
    assert fake_shoptet.stats(installation.eshop_id)["max_valid_tokens"] == fake_shoptet.max_api_tokens
    assert sum(metrics.snapshot("shoptet_api_token_cap_waits").values()) == sum(waits_before.values()) + 1


def test_at_the_token_cap_a_still_valid_cached_token_is_used(
    installation: Installation, fake_shoptet: FakeShoptet
) -> None:
    fake_shoptet.token_ttl = 20
    for _ in range(fake_shoptet.max_api_tokens):
        tokens.forget_access_tokens(installation)
        last = tokens.get_access_token(installation)
    # Past its refresh margin (a fifth of 20 s) but valid: minting is refused, so the cached one serves.
    cached = tokens.cached_token(installation)
    assert cached is not None
    tokens._store(installation, tokens.AccessToken(cached.value, time.time() + 3, lifetime=20))

    assert tokens.get_access_token(installation) == last
    assert fake_shoptet.stats(installation.eshop_id)["tokens_minted"] == fake_shoptet.max_api_tokens


def test_tokens_are_per_eshop(
    installation: Installation, other_installation: Installation, fake_shoptet: FakeShoptet
) -> None:
    mine = tokens.get_access_token(installation)
    theirs = tokens.get_access_token(other_installation)

    assert mine != theirs
    assert mine in fake_shoptet.eshops[installation.eshop_id].api_tokens
    assert theirs in fake_shoptet.eshops[other_installation.eshop_id].api_tokens
    tokens.forget_access_tokens(installation)
    assert tokens.cached_token(other_installation) is not None


def test_concurrent_threads_mint_one_token(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    fake_shoptet.add_fault(None, r"/partner/action/ApiOAuthServer/getAccessToken", 0, delay=0.3)
    results: list[str] = []

    def ask() -> None:
        try:
            results.append(tokens.get_access_token(Installation.objects.get(pk=installation.pk)))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=ask) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(results)) == 1
    assert fake_shoptet.stats(installation.eshop_id)["tokens_minted"] == 1


def test_discarding_keeps_a_newer_token(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    old = tokens.get_access_token(installation)
    tokens.discard_access_token(installation, old)
    new = tokens.get_access_token(installation)

    tokens.discard_access_token(installation, old)

    assert tokens.get_access_token(installation) == new != old


def test_maximum_tokens_reached_is_typed(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    for _ in range(5):
        tokens.mint_access_token(installation)

    with pytest.raises(MaximumTokensReached):
        tokens.mint_access_token(installation)

    assert Installation.objects.get(pk=installation.pk).status == Installation.Status.ACTIVE


def test_suspension_reported_by_get_access_token_suspends(
    installation: Installation, other_installation: Installation, fake_shoptet: FakeShoptet
) -> None:
    fake_shoptet.suspend(installation.eshop_id, send_system_webhook=False)

    with pytest.raises(AddonSuspended):
        ShoptetClient(installation).get_eshop()

    installation.refresh_from_db()
    assert installation.status == Installation.Status.SUSPENDED
    assert installation.status_changes.first().cause == "getAccessToken answered addon_suspended"  # type: ignore[union-attr]
    assert Installation.objects.get(pk=other_installation.pk).status == Installation.Status.ACTIVE


def test_uninstall_reported_by_get_access_token_uninstalls(
    installation: Installation, fake_shoptet: FakeShoptet
) -> None:
    fake_shoptet.uninstall(installation.eshop_id, send_system_webhook=False, keep_token_valid_for_probe=True)

    with pytest.raises(AddonNotInstalled):
        tokens.get_access_token(installation)

    installation.refresh_from_db()
    assert installation.status == Installation.Status.UNINSTALLED
    assert installation.uninstalled_at is not None


def test_an_invalid_oauth_token_changes_no_status(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    installation.oauth_token = "not-the-real-token"

    with pytest.raises(OAuthError) as raised:
        tokens.get_access_token(installation)

    assert raised.value.error == "invalid_token"
    assert Installation.objects.get(pk=installation.pk).status == Installation.Status.ACTIVE
