"""A failed `/changes` run keeps the cursor, is shown where staff and the e-shop's admin look, and is retried
with backoff until the mirror is right again."""

from __future__ import annotations

import html
import zoneinfo
from datetime import datetime, timedelta

import pytest
from django.template.defaultfilters import date as date_filter
from django.test import Client
from django.utils import timezone, translation

from installations.models import Installation
from shoptet_api import client as shoptet_client
from shoptet_api.errors import ShoptetError
from sync import changes, jobs, refresh, tasks
from sync.documents import resource_named
from sync.models import Invoice, Order, RefreshRequest, SyncCursor, SyncJob
from tests.addon.conftest import log_in
from tests.fakes.shoptet import FakeShoptet
from tests.sync.conftest import local_state, mirrored, shoptet_documents

pytestmark = pytest.mark.django_db

# One failing run: the task's first try and its retries, each with every attempt of the client.
REQUESTS_PER_FAILED_RUN = (tasks.MAX_RETRIES + 1) * shoptet_client.MAX_ATTEMPTS
INVOICE_DETAILS = r"^/api/invoices/(?!changes$|snapshot$)[^/]+$"


def cursor(installation: Installation, resource: str) -> SyncCursor:
    return SyncCursor.objects.get(installation=installation, resource=resource)


def make_retries_due(installation: Installation) -> None:
    """The minutes until the scheduled retries pass."""
    SyncCursor.objects.filter(installation=installation, retry_at__isnull=False).update(
        retry_at=timezone.now() - timedelta(seconds=1)
    )


def shown(moment: datetime | None, installation: Installation) -> str:
    """A time as the settings page shows it: the e-shop's time zone, Django's English DATETIME_FORMAT."""
    with translation.override("en"):
        return str(
            date_filter(
                timezone.localtime(moment, zoneinfo.ZoneInfo(installation.timezone or "UTC")), "DATETIME_FORMAT"
            )
        )


def settings_page(client: Client, fake: FakeShoptet, installation: Installation) -> str:
    login = log_in(client, fake, installation)
    return html.unescape(client.get(login.url).content.decode())


def test_a_failed_changes_run_is_retried_until_every_document_is_right(
    mirrored_shop: Installation,
    jobs_on_demand: FakeShoptet,
    eager_retrying_tasks: None,
    fast_backoff: None,
    admin_client: Client,
    client: Client,
) -> None:
    fake = jobs_on_demand
    shop = mirrored_shop.eshop_id
    orders, invoices = sorted(fake.eshops[shop].orders), sorted(fake.eshops[shop].invoices)
    fake.update_order(shop, orders[0], paid=True, status=-3, webhook=False)
    fake.delete_order(shop, orders[1], webhook=False)
    created_order = fake.create_order(shop, webhook=False)
    fake.update_invoice(shop, invoices[0], webhook=False, isValid=False)
    fake.delete_invoice(shop, invoices[1], webhook=False)
    created_invoice = fake.create_invoice(shop, orders[2], webhook=False)
    before = local_state(mirrored_shop)
    # Orders: /changes itself fails; invoices: /changes answers, every detail fetch fails.
    fake.add_fault("GET", r"^/api/orders/changes$", 503, times=10_000)
    fake.add_fault("GET", INVOICE_DETAILS, 500, times=10_000)

    tasks.sync_changes_everywhere.delay()

    failed = {job.resource: job for job in SyncJob.objects.filter(installation=mirrored_shop, mode="changes")}
    assert {resource: job.status for resource, job in failed.items()} == {"orders": "failed", "invoices": "failed"}
    assert failed["orders"].error.startswith(f"gave up after {tasks.MAX_RETRIES} retries: HTTP 503 ")
    assert failed["invoices"].error.startswith(f"gave up after {tasks.MAX_RETRIES} retries: HTTP 500 ")
    assert local_state(mirrored_shop) == before  # cursors included: neither moved
    for resource in ("orders", "invoices"):
        state = cursor(mirrored_shop, resource)
        assert (state.failures, state.failed_job_id, state.error) == (1, failed[resource].pk, failed[resource].error)
        assert state.failed_at is not None
        assert state.retry_at == state.failed_at + timedelta(minutes=1)

    orders_state = cursor(mirrored_shop, "orders")
    assert orders_state.failed_at is not None and orders_state.retry_at is not None
    installation_page = html.unescape(
        admin_client.get(f"/admin/installations/installation/{mirrored_shop.pk}/change/").content.decode()
    )
    assert (
        f"last orders changes sync failed at {orders_state.failed_at:%Y-%m-%d %H:%M} UTC, "
        f"retrying at {orders_state.retry_at:%Y-%m-%d %H:%M} UTC: {orders_state.error}"
    ) in installation_page
    job_page = admin_client.get(f"/admin/sync/syncjob/{failed['orders'].pk}/change/").content.decode()
    assert f"retrying at {orders_state.retry_at:%Y-%m-%d %H:%M} UTC" in job_page
    page = settings_page(client, fake, mirrored_shop)
    assert (
        f"Last changes sync failed at {shown(orders_state.failed_at, mirrored_shop)}, "
        f"retrying at {shown(orders_state.retry_at, mirrored_shop)}."
    ) in page
    assert "Fetching changes of orders from Shoptet failed. We try again automatically." in page
    assert "Fetching changes of invoices from Shoptet failed. We try again automatically." in page
    assert "The last import of orders failed. Start it again below." not in page

    fake.clear_faults()
    tasks.relay_sync_work.delay()
    assert SyncJob.objects.filter(installation=mirrored_shop, mode="changes").count() == 2  # not due yet

    make_retries_due(mirrored_shop)
    tasks.relay_sync_work.delay()

    retries = SyncJob.objects.filter(installation=mirrored_shop, mode="changes").exclude(
        pk__in=[j.pk for j in failed.values()]
    )
    assert sorted((job.resource, job.status, job.cause) for job in retries) == [
        ("invoices", "completed", "automatic retry (1 failed in a row)"),
        ("orders", "completed", "automatic retry (1 failed in a row)"),
    ]
    for resource in ("orders", "invoices"):
        assert mirrored(mirrored_shop, resource) == shoptet_documents(fake, mirrored_shop, resource)
        state = cursor(mirrored_shop, resource)
        assert (state.failures, state.failed_at, state.failed_job_id, state.error, state.retry_at) == (
            0,
            None,
            None,
            "",
            None,
        )
        assert state.changes_from is not None and state.changes_from > failed[resource].created_at - jobs.CURSOR_OVERLAP
    assert created_order in mirrored(mirrored_shop, "orders")
    assert created_invoice in mirrored(mirrored_shop, "invoices")
    assert Order.objects.get(installation=mirrored_shop, code=orders[1]).deleted_at is not None
    assert Invoice.objects.get(installation=mirrored_shop, code=invoices[1]).deleted_at is not None
    page = settings_page(client, fake, mirrored_shop)
    assert "Last changes sync failed" not in page
    assert "from Shoptet failed" not in page


def test_retries_come_later_after_each_failure_up_to_an_hour() -> None:
    delays = [jobs.retry_delay(failures) for failures in range(1, 10)]

    assert delays == [timedelta(minutes=minutes) for minutes in (1, 2, 4, 8, 16, 32, 60, 60, 60)]


def test_a_failing_retry_backs_off_and_a_later_success_clears_the_failure(
    mirrored_shop: Installation, jobs_on_demand: FakeShoptet, eager_retrying_tasks: None, fast_backoff: None
) -> None:
    fake = jobs_on_demand
    created = fake.create_order(mirrored_shop.eshop_id, webhook=False)
    cursor_before = cursor(mirrored_shop, "orders").changes_from
    fake.add_fault("GET", r"^/api/orders/changes$", 503, times=10_000)
    tasks.sync_changes.delay(
        jobs.request_sync(installation=mirrored_shop, resource="orders", mode="changes", cause="test").pk
    )

    make_retries_due(mirrored_shop)
    tasks.relay_sync_work.delay()

    state = cursor(mirrored_shop, "orders")
    assert state.failures == 2
    assert state.failed_at is not None
    assert state.retry_at == state.failed_at + timedelta(minutes=2)
    assert state.changes_from == cursor_before
    assert created not in mirrored(mirrored_shop, "orders")
    assert list(
        SyncJob.objects.filter(installation=mirrored_shop, mode="changes").values_list("status", flat=True)
    ) == [
        "failed",
        "failed",
    ]

    fake.clear_faults()
    make_retries_due(mirrored_shop)
    tasks.relay_sync_work.delay()

    state = cursor(mirrored_shop, "orders")
    assert (state.failures, state.retry_at) == (0, None)
    assert created in mirrored(mirrored_shop, "orders")
    assert SyncJob.objects.filter(installation=mirrored_shop, mode="changes").latest("pk").cause == (
        "automatic retry (2 failed in a row)"
    )


def test_a_refused_run_is_retried_too_but_not_for_a_suspended_e_shop(
    mirrored_shop: Installation, jobs_on_demand: FakeShoptet
) -> None:
    jobs_on_demand.add_fault("GET", r"^/api/orders/changes$", 403, error_code="invalid-token-no-rights", times=1)
    refused = changes.sync_changes(
        job=jobs.request_sync(installation=mirrored_shop, resource="orders", mode="changes", cause="test")
    )
    job = jobs.request_sync(installation=mirrored_shop, resource="invoices", mode="changes", cause="test")
    mirrored_shop.transition_to(Installation.Status.SUSPENDED, cause="test")

    suspended = changes.sync_changes(job=job)

    assert (refused.status, suspended.status) == ("failed", "failed")
    assert cursor(mirrored_shop, "orders").failures == 1
    assert cursor(mirrored_shop, "invoices").failures == 0
    make_retries_due(mirrored_shop)
    assert jobs.claim_due_work().changes == []  # held while suspended, like its webhooks


def test_a_due_retry_never_runs_beside_the_run_in_flight(
    mirrored_shop: Installation, jobs_on_demand: FakeShoptet, fast_backoff: None
) -> None:
    jobs_on_demand.add_fault("GET", r"^/api/orders/changes$", 503, times=shoptet_client.MAX_ATTEMPTS)
    job = jobs.request_sync(installation=mirrored_shop, resource="orders", mode="changes", cause="test")
    with pytest.raises(ShoptetError):
        changes.sync_changes(job=job)
    jobs.fail_job(job=job, error="gave up")
    running = jobs.request_sync(installation=mirrored_shop, resource="orders", mode="changes", cause="hourly")
    make_retries_due(mirrored_shop)

    relay = jobs.claim_due_work()

    assert relay.changes == []
    assert (
        SyncJob.objects.filter(installation=mirrored_shop, mode="changes", status__in=SyncJob.UNFINISHED).count() == 1
    )
    assert cursor(mirrored_shop, "orders").retry_at is None  # taken off the schedule: the run in flight decides
    assert jobs.claim_due_work() == jobs.Relay()
    assert changes.sync_changes(job=running).status == "completed"
    assert cursor(mirrored_shop, "orders").failures == 0


def test_a_claimed_run_is_not_run_again_by_a_second_worker(
    mirrored_shop: Installation, jobs_on_demand: FakeShoptet
) -> None:
    job = jobs.request_sync(installation=mirrored_shop, resource="orders", mode="changes", cause="test")
    SyncJob.objects.filter(pk=job.pk).update(status="running")  # another worker claimed it
    requests_before = jobs_on_demand.request_count(None, r".*")

    again = changes.sync_changes(job=job)

    assert again.status == "running"
    assert jobs_on_demand.request_count(None, r".*") == requests_before


def test_a_run_whose_worker_died_is_handed_back_and_completes(
    mirrored_shop: Installation, jobs_on_demand: FakeShoptet
) -> None:
    job = jobs.request_sync(installation=mirrored_shop, resource="orders", mode="changes", cause="test")
    SyncJob.objects.filter(pk=job.pk).update(status="running")
    SyncJob.objects.filter(pk=job.pk).update(updated_at=timezone.now() - jobs.STALE_RUN - timedelta(minutes=1))

    relay = jobs.claim_due_work()

    assert relay.changes == [job.pk]
    assert changes.sync_changes(job=job).status == "completed"


def test_one_e_shop_s_failures_do_not_hold_back_another_s_runs(
    mirrored_shop: Installation,
    other_onboarded: Installation,
    jobs_on_demand: FakeShoptet,
    eager_retrying_tasks: None,
    fast_backoff: None,
) -> None:
    fake = jobs_on_demand
    changes.sync_changes(
        job=jobs.request_sync(installation=other_onboarded, resource="orders", mode="changes", cause="first")
    )
    other_created = fake.create_order(other_onboarded.eshop_id, webhook=False)
    # Runs go e-shop by e-shop: these faults are all spent by the first e-shop's failing orders run.
    fake.add_fault("GET", r"^/api/orders/changes$", 503, times=REQUESTS_PER_FAILED_RUN)
    assert mirrored_shop.pk < other_onboarded.pk

    tasks.sync_changes_everywhere.delay()

    assert cursor(mirrored_shop, "orders").failures == 1
    assert cursor(other_onboarded, "orders").failures == 0
    assert other_created in mirrored(other_onboarded, "orders")
    other_jobs = SyncJob.objects.filter(installation=other_onboarded, cause="reconciliation")
    assert sorted(other_jobs.values_list("resource", "status")) == [("invoices", "completed"), ("orders", "completed")]
    other_before = local_state(other_onboarded)
    make_retries_due(mirrored_shop)

    tasks.relay_sync_work.delay()

    retried = SyncJob.objects.filter(cause__startswith="automatic retry")
    assert list(retried.values_list("installation_id", "resource", "status")) == [
        (mirrored_shop.pk, "orders", "completed")
    ]
    assert cursor(mirrored_shop, "orders").failures == 0
    assert local_state(other_onboarded) == other_before


def test_a_refresh_run_that_fails_after_its_retries_keeps_the_cursor_and_its_requests(
    mirrored_shop: Installation, jobs_on_demand: FakeShoptet, eager_retrying_tasks: None, fast_backoff: None
) -> None:
    fake = jobs_on_demand
    code = sorted(fake.eshops[mirrored_shop.eshop_id].invoices)[0]
    fake.update_invoice(mirrored_shop.eshop_id, code, webhook=False, isValid=False)
    invoices = resource_named("invoices")
    refresh.queue_refresh(installation=mirrored_shop, resource=invoices, codes=[code])
    before = local_state(mirrored_shop)
    fake.add_fault("GET", INVOICE_DETAILS, 500, times=10_000)
    result = tasks.refresh_documents.delay(mirrored_shop.pk, "invoices")

    assert isinstance(result.result, ShoptetError)

    assert local_state(mirrored_shop) == before
    assert list(RefreshRequest.objects.values_list("code", "claim")) == [(code, "")]  # free for the relay
    fake.clear_faults()
    RefreshRequest.objects.update(requested_at=timezone.now() - refresh.REFRESH_STALE - timedelta(seconds=1))
    tasks.relay_sync_work.delay()
    assert not RefreshRequest.objects.exists()
    assert mirrored(mirrored_shop, "invoices") == shoptet_documents(fake, mirrored_shop, "invoices")
