"""The settings page's resource toggles and import-from date act on the sync and the webhook registrations."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from addon import services as addon_services
from addon.auth import Admin
from installations.models import Installation
from shoptet_api.client import shoptet_time
from sync import jobs as sync_jobs
from sync import snapshots as sync_snapshots
from sync.models import Order, SyncCursor, SyncJob
from tests.fakes.shoptet import FakeShoptet
from tests.sync.conftest import deliver, import_snapshot

pytestmark = pytest.mark.django_db


def admin_of(installation: Installation) -> Admin:
    return Admin(
        eshop_id=installation.eshop_id,
        installation_id=installation.pk,
        email="admin@example.com",
        name="Admin",
        language="en",
        session_id="s",
        logged_in_at=0,
    )


def change(installation: Installation, **values: Any) -> None:
    addon_services.update_settings(installation=installation, admin=admin_of(installation), values=values)


def registered_events(fake: FakeShoptet, installation: Installation) -> set[str]:
    return {hook["event"] for hook in fake.eshops[installation.eshop_id].webhooks.values()}


def queries(fake: FakeShoptet, installation: Installation, path: str) -> list[dict[str, str]]:
    """The query parameters of every GET of `path` the e-shop's fake received, in order."""
    with fake.state.lock:
        logged = list(fake.eshops[installation.eshop_id].stats.queries)
    return [query for method, logged_path, query in logged if method == "GET" and logged_path == path]


def test_orders_switched_off_get_no_refresh_changes_or_snapshot(
    client: Client,
    mirrored_shop: Installation,
    other_onboarded: Installation,
    jobs_on_demand: FakeShoptet,
    process,
) -> None:
    fake = jobs_on_demand
    with_orders = other_onboarded
    change(mirrored_shop, sync_orders=False)
    created = fake.create_order(mirrored_shop.eshop_id, webhook=False)
    other_created = fake.create_order(with_orders.eshop_id, webhook=False)

    assert deliver(client, mirrored_shop, "order:create", created) == 200
    assert deliver(client, with_orders, "order:create", other_created) == 200
    process()
    jobs = sync_jobs.request_changes_everywhere()

    assert not Order.objects.filter(installation=mirrored_shop, code=created).exists()
    assert Order.objects.filter(installation=with_orders, code=other_created).exists()
    assert sorted((job.installation_id, job.resource) for job in jobs) == sorted(
        [(mirrored_shop.pk, "invoices"), (with_orders.pk, "orders"), (with_orders.pk, "invoices")]
    )
    with pytest.raises(sync_jobs.SyncError):
        sync_jobs.request_sync(installation=mirrored_shop, resource="orders", mode="snapshot", cause="test")


def test_no_initial_import_of_a_resource_switched_off(onboarded: Installation, jobs_on_demand: FakeShoptet) -> None:
    change(onboarded, sync_invoices=False)

    jobs = sync_jobs.request_initial_import(installation=onboarded)

    assert [job.resource for job in jobs] == ["orders"]


def test_switching_off_deregisters_the_webhooks_and_on_registers_them_again(
    mirrored_shop: Installation,
    other_onboarded: Installation,
    jobs_on_demand: FakeShoptet,
    eager_tasks: None,
    django_capture_on_commit_callbacks,  # type: ignore[no-untyped-def]
) -> None:
    fake = jobs_on_demand
    assert {"order:create", "order:update", "order:delete"} <= registered_events(fake, mirrored_shop)

    with django_capture_on_commit_callbacks(execute=True):
        change(mirrored_shop, sync_orders=False)

    assert not {event for event in registered_events(fake, mirrored_shop) if event.startswith("order:")}
    assert "invoice:create" in registered_events(fake, mirrored_shop)
    assert "order:create" in registered_events(fake, other_onboarded)
    assert fake.request_count("DELETE", r"^/api/webhooks/\d+$") == 3

    with django_capture_on_commit_callbacks(execute=True):
        change(mirrored_shop, sync_orders=True)

    assert {"order:create", "order:update", "order:delete"} <= registered_events(fake, mirrored_shop)


def test_switching_on_catches_up_from_the_moment_it_was_switched_off(
    mirrored_shop: Installation,
    jobs_on_demand: FakeShoptet,
    eager_tasks: None,
    django_capture_on_commit_callbacks,  # type: ignore[no-untyped-def]
) -> None:
    fake = jobs_on_demand
    SyncCursor.objects.filter(installation=mirrored_shop, resource="orders").delete()
    change(mirrored_shop, sync_orders=False)
    off_at = mirrored_shop.settings_changes.get(field="sync_orders").created_at
    created = fake.create_order(mirrored_shop.eshop_id, webhook=False)

    with django_capture_on_commit_callbacks(execute=True):
        change(mirrored_shop, sync_orders=True)

    reads = queries(fake, mirrored_shop, "/api/orders/changes")
    assert [query["from"] for query in reads] == [shoptet_time(off_at)]
    assert Order.objects.filter(installation=mirrored_shop, code=created).exists()


def test_switched_off_beyond_the_changes_window_catches_up_with_a_snapshot(
    mirrored_shop: Installation, jobs_on_demand: FakeShoptet
) -> None:
    change(mirrored_shop, sync_orders=False)
    mirrored_shop.settings_changes.filter(field="sync_orders").update(created_at=timezone.now() - timedelta(days=40))

    change(mirrored_shop, sync_orders=True)

    job = SyncJob.objects.filter(installation=mirrored_shop, resource="orders").latest("pk")
    assert (job.mode, job.status) == ("snapshot", "requested")


def test_the_snapshot_asks_only_for_documents_from_the_import_from_date(
    onboarded: Installation, other_onboarded: Installation, jobs_on_demand: FakeShoptet
) -> None:
    fake = jobs_on_demand
    change(onboarded, import_since=date(2026, 1, 15))

    sync_snapshots.start_snapshot(
        job=sync_jobs.request_sync(installation=onboarded, resource="invoices", mode="snapshot", cause="test")
    )
    sync_snapshots.start_snapshot(
        job=sync_jobs.request_sync(installation=other_onboarded, resource="invoices", mode="snapshot", cause="test")
    )

    (first,) = queries(fake, onboarded, "/api/invoices/snapshot")
    (second,) = queries(fake, other_onboarded, "/api/invoices/snapshot")
    assert first["creationTimeFrom"] == "2026-01-15T00:00:00+0000"
    assert "creationTimeFrom" not in second


def test_a_webhook_for_an_order_older_than_the_import_from_date_stores_nothing(
    client: Client, onboarded: Installation, jobs_on_demand: FakeShoptet, process
) -> None:
    fake = jobs_on_demand
    old = fake.create_order(onboarded.eshop_id, webhook=False)
    new = fake.create_order(onboarded.eshop_id, webhook=False)
    fake.eshops[onboarded.eshop_id].orders[old]["creationTime"] = "2020-03-01T10:00:00+0100"
    change(onboarded, import_since=date(2021, 1, 1))

    assert deliver(client, onboarded, "order:update", old) == 200
    assert deliver(client, onboarded, "order:update", new) == 200
    process()

    assert list(Order.objects.filter(installation=onboarded).values_list("code", flat=True)) == [new]


def test_an_earlier_import_from_date_imports_the_missing_range(
    onboarded: Installation, jobs_on_demand: FakeShoptet
) -> None:
    fake = jobs_on_demand
    orders = fake.eshops[onboarded.eshop_id].orders
    old, older, oldest = (fake.create_order(onboarded.eshop_id, webhook=False) for _ in range(3))
    orders[old]["creationTime"] = "2025-06-01T10:00:00+0000"
    orders[older]["creationTime"] = "2024-06-01T10:00:00+0000"
    orders[oldest]["creationTime"] = "2023-06-01T10:00:00+0000"
    change(onboarded, import_since=date(2025, 1, 1))
    import_snapshot(fake, onboarded, "orders")
    assert {old, older, oldest} & set(Order.objects.values_list("code", flat=True)) == {old}

    change(onboarded, import_since=date(2024, 1, 1))
    job = SyncJob.objects.filter(installation=onboarded, resource="orders", status="requested").get()
    job = sync_snapshots.start_snapshot(job=job)
    fake.finish_job(onboarded.eshop_id, job.shoptet_job_id)
    sync_snapshots.import_snapshot(job=job)

    missing_range = queries(fake, onboarded, "/api/orders/snapshot")[-1]
    assert (missing_range["creationTimeFrom"], missing_range["creationTimeTo"]) == (
        "2024-01-01T00:00:00+0000",
        "2025-01-01T00:00:00+0000",
    )
    assert {old, older, oldest} & set(Order.objects.values_list("code", flat=True)) == {old, older}


def test_a_due_changes_retry_of_a_resource_switched_off_is_dropped(
    mirrored_shop: Installation, other_onboarded: Installation, jobs_on_demand: FakeShoptet
) -> None:
    due = timezone.now() - timedelta(minutes=1)
    for installation in (mirrored_shop, other_onboarded):
        SyncCursor.objects.update_or_create(
            installation=installation, resource="orders", defaults={"retry_at": due, "failures": 1}
        )
    change(mirrored_shop, sync_orders=False)

    relay = sync_jobs.claim_due_work()

    retried = SyncJob.objects.filter(pk__in=relay.changes).values_list("installation_id", "resource")
    assert list(retried) == [(other_onboarded.pk, "orders")]
