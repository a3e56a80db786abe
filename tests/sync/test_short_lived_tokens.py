"""A whole sync against 5-second API tokens and 60 ms per call: tokens rotate, nothing fails, the cap holds."""

from __future__ import annotations

import time

import pytest

from config import metrics
from installations.models import Installation
from sync import changes as sync_changes
from sync import jobs as sync_jobs
from tests.fakes.shoptet import FakeShoptet
from tests.sync.conftest import import_snapshot, mirrored, shoptet_documents

pytestmark = pytest.mark.django_db

TOKEN_SECONDS = 5
LATENCY_SECONDS = 0.06


@pytest.fixture
def short_lived_tokens(fake_shoptet: FakeShoptet) -> float:
    """Shoptet hands out 5-second tokens from the install on; the moment they started."""
    fake_shoptet.token_ttl = TOKEN_SECONDS
    return time.monotonic()


def test_snapshots_and_changes_with_5_second_tokens_and_60_ms_latency(
    short_lived_tokens: float, onboarded: Installation, jobs_on_demand: FakeShoptet
) -> None:
    fake = jobs_on_demand
    eshop_id = onboarded.eshop_id
    for _ in range(60):
        fake.create_order(eshop_id, webhook=False)
    for code in list(fake.eshops[eshop_id].orders)[:40]:
        fake.create_invoice(eshop_id, code, webhook=False)
    fake.add_fault(None, r".*", 0, times=10**6, delay=LATENCY_SECONDS)
    cap_refusals_before = sum(metrics.snapshot("shoptet_api_token_cap_waits").values())

    snapshots = [import_snapshot(fake, onboarded, resource) for resource in ("orders", "invoices")]
    # Edits come later than the snapshot's second (the changes cursor's resolution), as in real life.
    time.sleep(1.1)
    orders, invoices = list(fake.eshops[eshop_id].orders), list(fake.eshops[eshop_id].invoices)
    for code in orders[:30]:
        fake.update_order(eshop_id, code, webhook=False, paid=True)
    for code in orders[15:20]:
        fake.delete_order(eshop_id, code, webhook=False)
    for _ in range(10):
        fake.create_order(eshop_id, webhook=False)
    for code in invoices[:20]:
        fake.update_invoice(eshop_id, code, webhook=False, varSymbol=123456)
    for code in invoices[10:13]:
        fake.delete_invoice(eshop_id, code, webhook=False)
    for code in orders[20:25]:
        fake.create_invoice(eshop_id, code, webhook=False)
    changes = [
        sync_changes.sync_changes(
            job=sync_jobs.request_sync(installation=onboarded, resource=resource, mode="changes", cause="test")
        )
        for resource in ("orders", "invoices")
    ]
    # From the install on: onboarding's calls are part of the run, and so is its token.
    duration = time.monotonic() - short_lived_tokens

    stats = fake.stats(eshop_id)
    grants = stats["tokens_minted"]
    print(f"\n5 s tokens, 60 ms per call: {duration:.1f} s, {grants} grants, max {stats['max_valid_tokens']} valid")
    assert [job.status for job in snapshots + changes] == ["completed"] * 4, [job.error for job in changes]
    for resource in ("orders", "invoices"):
        assert mirrored(onboarded, resource) == shoptet_documents(fake, onboarded, resource)
    assert sum(metrics.snapshot("shoptet_api_token_cap_waits").values()) == cap_refusals_before
    assert stats["max_valid_tokens"] <= fake.max_api_tokens
    assert grants >= 2
    # About one grant per token lifetime, not one per call.
    assert grants <= duration / (TOKEN_SECONDS * 0.8) + 2
