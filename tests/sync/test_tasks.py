"""Tasks and the relay: onboarding starts the initial import, lost work is picked up again, jobs move on."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from installations import tasks as installation_tasks
from installations.models import Installation
from sync import jobs as sync_jobs
from sync import refresh as sync_refresh
from sync import tasks
from sync.documents import resource_named
from sync.models import Order, RefreshRequest, SyncJob
from tests.fakes.shoptet import FakeShoptet
from tests.sync.conftest import finished_snapshot, mirrored, shoptet_documents

pytestmark = pytest.mark.django_db


def test_onboarding_starts_the_initial_import_once(
    installation: Installation, jobs_on_demand: FakeShoptet, eager_tasks: None, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        installation_tasks.onboard.delay(installation.pk)

    jobs = SyncJob.objects.filter(installation=installation).order_by("resource")
    assert [(job.resource, job.mode, job.status, job.cause) for job in jobs] == [
        ("invoices", "snapshot", "running", "initial import"),
        ("orders", "snapshot", "running", "initial import"),
    ]
    assert sorted(job.resource for job in jobs_on_demand.eshops[installation.eshop_id].jobs.values()) == [
        "invoices",
        "orders",
    ]

    installation_tasks.onboard.delay(installation.pk)

    assert SyncJob.objects.filter(installation=installation).count() == 2


def test_the_initial_import_can_be_turned_off(
    installation: Installation, jobs_on_demand: FakeShoptet, eager_tasks: None, settings
) -> None:
    settings.SYNC_INITIAL_IMPORT = False

    installation_tasks.onboard.delay(installation.pk)

    installation.refresh_from_db()
    assert installation.onboarding_status == "done"
    assert not SyncJob.objects.exists()


def test_a_failed_initial_import_is_requested_again_by_the_next_onboarding(
    onboarded: Installation, jobs_on_demand: FakeShoptet
) -> None:
    first = sync_jobs.request_initial_import(installation=onboarded)
    SyncJob.objects.filter(pk__in=[job.pk for job in first], resource="orders").update(status="failed")
    SyncJob.objects.filter(pk__in=[job.pk for job in first], resource="invoices").update(status="completed")

    again = sync_jobs.request_initial_import(installation=onboarded)

    assert [(job.resource, job.status) for job in again] == [("orders", "requested")]


def test_import_task_runs_the_import(onboarded: Installation, jobs_on_demand: FakeShoptet, eager_tasks: None) -> None:
    job = finished_snapshot(jobs_on_demand, onboarded, "orders")

    tasks.import_snapshot.delay(job.pk)

    job.refresh_from_db()
    assert (job.status, job.imported) == ("completed", 5)
    assert mirrored(onboarded, "orders") == shoptet_documents(jobs_on_demand, onboarded, "orders")


def test_the_task_fails_the_job_after_its_last_retry(
    onboarded: Installation, jobs_on_demand: FakeShoptet, eager_tasks: None, fast_backoff: None
) -> None:
    job = sync_jobs.request_sync(installation=onboarded, resource="orders", mode="snapshot", cause="test")
    jobs_on_demand.add_fault("GET", r"^/api/orders/snapshot$", 503, times=1000)

    tasks.start_snapshot.apply(args=(job.pk,), retries=tasks.MAX_RETRIES)

    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error.startswith(f"gave up after {tasks.MAX_RETRIES} retries: HTTP 503 service-unavailable")
    assert not Order.objects.exists()


def test_the_relay_sends_lost_work_again_and_polls_due_jobs(
    onboarded: Installation, jobs_on_demand: FakeShoptet, eager_tasks: None
) -> None:
    lost_start = sync_jobs.request_sync(installation=onboarded, resource="invoices", mode="snapshot", cause="test")
    polled = finished_snapshot(jobs_on_demand, onboarded, "orders")
    code = sorted(jobs_on_demand.eshops[onboarded.eshop_id].orders)[0]
    sync_refresh.queue_refresh(installation=onboarded, resource=resource_named("orders"), codes=[code])
    an_hour_ago = timezone.now() - timedelta(hours=1)
    SyncJob.objects.filter(pk=lost_start.pk).update(enqueued_at=an_hour_ago)
    SyncJob.objects.filter(pk=polled.pk).update(next_poll_at=an_hour_ago)
    RefreshRequest.objects.update(requested_at=an_hour_ago)

    tasks.relay_sync_work.delay()

    lost_start.refresh_from_db()
    polled.refresh_from_db()
    assert (lost_start.status, polled.status, polled.imported) == ("running", "completed", 5)
    assert not RefreshRequest.objects.exists()
    assert sync_jobs.claim_due_work() == sync_jobs.Relay()


def test_a_stuck_import_is_sent_again(onboarded: Installation, jobs_on_demand: FakeShoptet) -> None:
    job = finished_snapshot(jobs_on_demand, onboarded, "orders")
    SyncJob.objects.filter(pk=job.pk).update(status="importing")
    SyncJob.objects.filter(pk=job.pk).update(updated_at=timezone.now() - sync_jobs.STALE_RUN - timedelta(minutes=1))

    relay = sync_jobs.claim_due_work()

    assert (relay.imports, relay.starts, relay.changes) == ([job.pk], [], [])
    assert sync_jobs.claim_due_work().imports == []


def test_hourly_reconciliation_enqueues_changes_runs(
    onboarded: Installation, other_onboarded: Installation, jobs_on_demand: FakeShoptet, eager_tasks: None
) -> None:
    other_onboarded.transition_to(Installation.Status.SUSPENDED, cause="test")

    tasks.sync_changes_everywhere.delay()

    jobs = SyncJob.objects.order_by("resource")
    assert [(job.installation_id, job.resource, job.status, job.note) for job in jobs] == [
        (onboarded.pk, "invoices", "completed", "first run: changes are read from now on"),
        (onboarded.pk, "orders", "completed", "first run: changes are read from now on"),
    ]
