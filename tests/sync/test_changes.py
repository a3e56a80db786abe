"""`/changes` reconciliation: from the cursor, paged, skipping what webhooks already brought; snapshots past 30 days."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from installations.models import Installation
from shoptet_api.errors import ShoptetError
from sync import changes as sync_changes
from sync import jobs as sync_jobs
from sync import refresh as sync_refresh
from sync import snapshots as sync_snapshots
from sync.documents import resource_named
from sync.models import Invoice, Order, SyncCursor, SyncJob
from tests.fakes.shoptet import FakeShoptet
from tests.sync.conftest import local_state, mirrored, shoptet_documents

pytestmark = pytest.mark.django_db


def run_changes(installation: Installation, resource: str) -> SyncJob:
    job = sync_jobs.request_sync(installation=installation, resource=resource, mode="changes", cause="test")
    return sync_changes.sync_changes(job=job)


def cursor_of(installation: Installation, resource: str) -> datetime:
    changes_from = SyncCursor.objects.get(installation=installation, resource=resource).changes_from
    assert changes_from is not None
    return changes_from


def test_the_first_run_without_a_snapshot_starts_the_cursor_at_now(
    onboarded: Installation, fake_shoptet: FakeShoptet
) -> None:
    before = timezone.now()

    job = run_changes(onboarded, "orders")

    assert (job.status, job.received, job.note) == ("completed", 0, "first run: changes are read from now on")
    assert before - sync_jobs.CURSOR_OVERLAP <= cursor_of(onboarded, "orders") <= timezone.now()
    assert fake_shoptet.request_count("GET", r"/changes") == 0


def test_no_cursor_while_a_snapshot_runs(onboarded: Installation, jobs_on_demand: FakeShoptet) -> None:
    sync_snapshots.start_snapshot(
        job=sync_jobs.request_sync(installation=onboarded, resource="orders", mode="snapshot", cause="test")
    )

    job = run_changes(onboarded, "orders")

    assert (job.status, job.note) == ("completed", "a snapshot is running; changes are read after it")
    assert not SyncCursor.objects.filter(installation=onboarded).exists()


def test_changes_since_the_cursor_are_applied_and_the_cursor_moves(
    mirrored_shop: Installation, other_onboarded: Installation, jobs_on_demand: FakeShoptet
) -> None:
    fake = jobs_on_demand
    shop = mirrored_shop.eshop_id
    codes = sorted(fake.eshops[shop].orders)
    fake.update_order(shop, codes[0], paid=True, status=-3, webhook=False)
    fake.delete_order(shop, codes[1], webhook=False)
    created = fake.create_order(shop, webhook=False)
    other_before = local_state(other_onboarded)
    started = timezone.now()

    job = run_changes(mirrored_shop, "orders")

    assert (job.status, job.received, job.imported, job.deleted, job.skipped) == ("completed", 3, 2, 1, 0)
    assert mirrored(mirrored_shop, "orders") == shoptet_documents(fake, mirrored_shop, "orders")
    assert Order.objects.get(installation=mirrored_shop, code=codes[1]).deleted_at is not None
    assert created in mirrored(mirrored_shop, "orders")
    assert cursor_of(mirrored_shop, "orders") >= started - sync_jobs.CURSOR_OVERLAP
    assert fake.request_count("GET", r"^/api/orders/changes$") == 1
    assert local_state(other_onboarded) == other_before


def test_changes_that_webhooks_already_brought_are_skipped(
    mirrored_shop: Installation, jobs_on_demand: FakeShoptet
) -> None:
    fake = jobs_on_demand
    shop = mirrored_shop.eshop_id
    code = sorted(fake.eshops[shop].orders)[0]
    fresh = fake.update_order(shop, code, paid=True, webhook=False)
    sync_refresh.upsert_document(installation=mirrored_shop, resource=resource_named("orders"), document=fresh)
    details = r"^/api/orders/(?!changes$|snapshot$)[^/]+$"
    details_before = fake.request_count("GET", details)

    job = run_changes(mirrored_shop, "orders")

    assert (job.received, job.imported, job.skipped) == (1, 0, 1)
    assert fake.request_count("GET", details) == details_before


def test_changes_are_read_page_by_page(mirrored_shop: Installation, jobs_on_demand: FakeShoptet) -> None:
    fake = jobs_on_demand
    created = [fake.create_invoice(mirrored_shop.eshop_id, webhook=False) for _ in range(45)]

    job = run_changes(mirrored_shop, "invoices")

    assert (job.received, job.imported) == (45, 45)
    assert fake.request_count("GET", r"^/api/invoices/changes$") == 3  # Shoptet pages invoice changes by 20
    assert set(created) <= set(mirrored(mirrored_shop, "invoices"))
    assert mirrored(mirrored_shop, "invoices") == shoptet_documents(fake, mirrored_shop, "invoices")


def test_a_run_that_fails_midway_leaves_the_cursor_and_the_rerun_converges(
    mirrored_shop: Installation, jobs_on_demand: FakeShoptet, fast_backoff: None
) -> None:
    fake = jobs_on_demand
    for _ in range(25):
        fake.create_invoice(mirrored_shop.eshop_id, webhook=False)
    cursor_before = cursor_of(mirrored_shop, "invoices")
    fake.add_fault("GET", r"^/api/invoices/changes$", 500, times=10)
    job = sync_jobs.request_sync(installation=mirrored_shop, resource="invoices", mode="changes", cause="test")

    with pytest.raises(ShoptetError):
        sync_changes.sync_changes(job=job)

    job.refresh_from_db()
    assert job.status == "requested"  # handed back for the task's retry
    assert cursor_of(mirrored_shop, "invoices") == cursor_before
    fake.clear_faults()
    job = sync_changes.sync_changes(job=job)
    assert (job.status, job.imported) == ("completed", 25)
    assert mirrored(mirrored_shop, "invoices") == shoptet_documents(fake, mirrored_shop, "invoices")


def test_out_of_order_changes_keep_the_newest(mirrored_shop: Installation, jobs_on_demand: FakeShoptet) -> None:
    fake = jobs_on_demand
    shop = mirrored_shop.eshop_id
    code = sorted(fake.eshops[shop].orders)[0]
    older = fake.update_order(shop, code, email="first@example.cz", webhook=False)
    fake.advance_time(30)
    newer = fake.update_order(shop, code, email="second@example.cz", webhook=False)
    orders = resource_named("orders")

    assert sync_refresh.upsert_document(installation=mirrored_shop, resource=orders, document=newer) is True
    assert sync_refresh.upsert_document(installation=mirrored_shop, resource=orders, document=older) is False

    order = Order.objects.get(installation=mirrored_shop, code=code)
    assert (order.email, order.data) == ("second@example.cz", newer)
    assert list(order.items.values_list("item_id", flat=True)) == [item["itemId"] for item in newer["items"]]


def test_a_cursor_older_than_shoptet_s_window_runs_an_incremental_snapshot(
    mirrored_shop: Installation, jobs_on_demand: FakeShoptet
) -> None:
    fake = jobs_on_demand
    shop = mirrored_shop.eshop_id
    fake.update_order(shop, sorted(fake.eshops[shop].orders)[0], paid=True, webhook=False)
    old_cursor = timezone.now() - timedelta(days=31)
    SyncCursor.objects.filter(installation=mirrored_shop, resource="orders").update(changes_from=old_cursor)
    changed_since = {
        code
        for code, order in fake.eshops[shop].orders.items()
        if datetime.strptime(order["changeTime"], "%Y-%m-%dT%H:%M:%S%z") >= old_cursor
    }

    job = run_changes(mirrored_shop, "orders")

    snapshot = SyncJob.objects.get(installation=mirrored_shop, mode="snapshot", status="running")
    assert (job.status, job.note) == (
        "completed",
        f"cursor older than 30 days: incremental snapshot, job {snapshot.pk}",
    )
    assert fake.request_count("GET", r"/api/orders/changes") == 0
    assert (snapshot.resource, snapshot.change_time_from, snapshot.cause) == (
        "orders",
        old_cursor,
        "changes cursor older than Shoptet's window",
    )
    fake.finish_job(shop, snapshot.shoptet_job_id)
    snapshot = sync_snapshots.import_snapshot(job=snapshot)
    # Shoptet filtered by changeTimeFrom: only what changed since the cursor was in the file.
    assert 0 < len(changed_since) < len(fake.eshops[shop].orders)
    assert (snapshot.status, snapshot.received, snapshot.imported) == (
        "completed",
        len(changed_since),
        len(changed_since),
    )
    assert snapshot.deleted == 0  # incremental: absence from it means nothing
    assert mirrored(mirrored_shop, "orders") == shoptet_documents(fake, mirrored_shop, "orders")
    assert cursor_of(mirrored_shop, "orders") == snapshot.created_at - sync_jobs.CURSOR_OVERLAP


def test_token_expiry_and_429s_during_a_changes_run(
    mirrored_shop: Installation, jobs_on_demand: FakeShoptet, fast_backoff: None
) -> None:
    fake = jobs_on_demand
    for _ in range(3):
        fake.create_order(mirrored_shop.eshop_id, webhook=False)
    fake.expire_api_tokens(mirrored_shop.eshop_id)
    fake.add_fault("GET", r"^/api/orders/changes$", 429, times=2, headers={"Retry-After": "0"})
    fake.add_fault("GET", r"^/api/orders/(?!changes)[^/]+$", 429, times=1, headers={"Retry-After": "0"})

    job = run_changes(mirrored_shop, "orders")

    assert (job.status, job.received, job.imported) == ("completed", 3, 3)
    assert mirrored(mirrored_shop, "orders") == shoptet_documents(fake, mirrored_shop, "orders")
    assert fake.stats(mirrored_shop.eshop_id)["tokens_minted"] == 2


def test_reconciliation_runs_for_active_installations_only(
    onboarded: Installation, other_onboarded: Installation, fake_shoptet: FakeShoptet
) -> None:
    other_onboarded.transition_to(Installation.Status.SUSPENDED, cause="test")

    jobs = sync_jobs.request_changes_everywhere()

    assert sorted((job.installation_id, job.resource) for job in jobs) == [
        (onboarded.pk, "invoices"),
        (onboarded.pk, "orders"),
    ]
    assert sync_jobs.request_changes_everywhere() == []  # those are still in flight
    other_onboarded.transition_to(Installation.Status.UNINSTALLED, cause="test")
    assert not SyncJob.objects.filter(installation=other_onboarded).exists()


def test_a_job_of_a_suspended_installation_fails_without_calling_shoptet(
    mirrored_shop: Installation, jobs_on_demand: FakeShoptet
) -> None:
    job = sync_jobs.request_sync(installation=mirrored_shop, resource="orders", mode="changes", cause="test")
    mirrored_shop.transition_to(Installation.Status.SUSPENDED, cause="test")
    requests_before = jobs_on_demand.request_count(None, r".*")

    job = sync_changes.sync_changes(job=job)

    assert (job.status, job.error) == ("failed", f"e-shop {mirrored_shop.eshop_id} is suspended: not synced")
    assert jobs_on_demand.request_count(None, r".*") == requests_before


def test_old_finished_changes_jobs_are_pruned(onboarded: Installation, other_onboarded: Installation) -> None:
    old = run_changes(onboarded, "orders")
    recent = run_changes(other_onboarded, "orders")
    SyncJob.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(days=31))

    assert sync_jobs.prune_jobs() == 1

    assert list(SyncJob.objects.values_list("pk", flat=True)) == [recent.pk]


def test_pruning_takes_a_bounded_slice_oldest_first(onboarded: Installation) -> None:
    runs = [
        SyncJob.objects.create(installation=onboarded, resource="orders", mode="changes", status="completed")
        for _ in range(5)
    ]
    for age, run in enumerate(runs):
        SyncJob.objects.filter(pk=run.pk).update(finished_at=timezone.now() - timedelta(days=40 + age))

    assert sync_jobs.prune_jobs(limit=2) == 2

    assert sorted(SyncJob.objects.values_list("pk", flat=True)) == [run.pk for run in runs[:3]]
    assert Invoice.objects.count() == 0


def test_a_changes_run_shoptet_refuses_fails_and_keeps_the_cursor(
    mirrored_shop: Installation, jobs_on_demand: FakeShoptet
) -> None:
    cursor_before = cursor_of(mirrored_shop, "orders")
    jobs_on_demand.add_fault(
        "GET", r"^/api/orders/changes$", 403, error_code="invalid-token-no-rights", message="No rights."
    )

    job = run_changes(mirrored_shop, "orders")

    assert job.status == "failed"
    assert job.error.startswith("HTTP 403 invalid-token-no-rights No rights. (request ")
    assert cursor_of(mirrored_shop, "orders") == cursor_before
