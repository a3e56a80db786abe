"""Admin: orders and invoices (filters, search, items, raw JSON), jobs (retry, start a sync), failing syncs."""

from __future__ import annotations

import pytest
from django.test import Client

from installations.models import Installation
from sync import changes as sync_changes
from sync import jobs as sync_jobs
from sync.models import Invoice, Order, SyncCursor, SyncJob
from tests.fakes.shoptet import FakeShoptet
from tests.sync.conftest import import_snapshot, mirrored

pytestmark = pytest.mark.django_db


@pytest.fixture
def synced(onboarded: Installation, other_onboarded: Installation, jobs_on_demand: FakeShoptet) -> FakeShoptet:
    jobs_on_demand.create_order(onboarded.eshop_id, code="2026/000777", webhook=False)
    for installation in (onboarded, other_onboarded):
        import_snapshot(jobs_on_demand, installation, "orders")
        import_snapshot(jobs_on_demand, installation, "invoices")
    return jobs_on_demand


def test_orders_are_listed_searched_and_shown_read_only(
    admin_client: Client, synced: FakeShoptet, onboarded: Installation
) -> None:
    order = Order.objects.get(installation=onboarded, code="2026/000777")

    listing = admin_client.get("/admin/sync/order/")
    by_code = admin_client.get("/admin/sync/order/", {"q": "2026/0007"})
    by_email = admin_client.get("/admin/sync/order/", {"q": order.email})
    filtered = admin_client.get("/admin/sync/order/", {"eshop": str(onboarded.eshop_id), "deleted": "no"})
    detail = admin_client.get(f"/admin/sync/order/{order.pk}/change/")

    assert listing.status_code == 200
    assert list(by_code.context["cl"].result_list) == [order]
    assert order in by_email.context["cl"].result_list
    assert {o.installation_id for o in filtered.context["cl"].result_list} == {onboarded.pk}
    assert len(filtered.context["cl"].result_list) == 6
    assert detail.status_code == 200
    content = detail.content.decode()
    assert "&quot;code&quot;: &quot;2026/000777&quot;" in content  # the raw JSON, escaped
    for item in order.data["items"]:
        assert item["name"] in content
    assert 'name="_save"' not in content
    assert admin_client.post(f"/admin/sync/order/{order.pk}/delete/").status_code == 403


def test_invoices_are_listed_searched_and_shown(
    admin_client: Client, synced: FakeShoptet, onboarded: Installation
) -> None:
    code = sorted(mirrored(onboarded, "invoices"))[0]
    invoice = Invoice.objects.get(installation=onboarded, code=code)

    by_symbol = admin_client.get("/admin/sync/invoice/", {"q": str(invoice.var_symbol)})
    by_code = admin_client.get("/admin/sync/invoice/", {"q": code})

    assert admin_client.get("/admin/sync/invoice/").status_code == 200
    assert invoice in by_symbol.context["cl"].result_list
    assert invoice in by_code.context["cl"].result_list
    assert admin_client.get(f"/admin/sync/invoice/{invoice.pk}/change/").status_code == 200


def test_a_failed_job_is_retried_from_the_admin(
    admin_client: Client,
    onboarded: Installation,
    jobs_on_demand: FakeShoptet,
    eager_tasks: None,
    django_capture_on_commit_callbacks,
) -> None:
    jobs_on_demand.fail_next_job(onboarded.eshop_id)
    failed = import_snapshot(jobs_on_demand, onboarded, "orders")
    assert failed.status == "failed"
    listing = admin_client.get("/admin/sync/syncjob/")
    assert "Shoptet&#x27;s job" in listing.content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/sync/syncjob/", {"action": "retry", "_selected_action": [failed.pk]}, follow=True
        )

    assert "1 jobs queued again." in response.content.decode()
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == ("running", 2)
    assert failed.shoptet_job_id in jobs_on_demand.eshops[onboarded.eshop_id].jobs


def test_a_sync_is_started_from_the_admin(
    admin_client: Client,
    onboarded: Installation,
    jobs_on_demand: FakeShoptet,
    eager_tasks: None,
    django_capture_on_commit_callbacks,
) -> None:
    assert "Start a sync" in admin_client.get("/admin/sync/syncjob/").content.decode()
    assert admin_client.get("/admin/sync/syncjob/start/").status_code == 200

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/sync/syncjob/start/", {"eshop_id": onboarded.eshop_id, "resource": "invoices", "mode": "snapshot"}
        )

    assert response.status_code == 302
    job = SyncJob.objects.get(installation=onboarded)
    assert (job.resource, job.mode, job.status, job.cause) == ("invoices", "snapshot", "running", "admin (admin)")

    again = admin_client.post(
        "/admin/sync/syncjob/start/", {"eshop_id": onboarded.eshop_id, "resource": "invoices", "mode": "snapshot"}
    )
    assert again.status_code == 200
    assert f"Snapshot of invoices #{job.pk} is already running" in again.content.decode()
    unknown = admin_client.post("/admin/sync/syncjob/start/", {"eshop_id": 5, "resource": "orders", "mode": "changes"})
    assert "No installation has this e-shop id." in unknown.content.decode()
    assert SyncJob.objects.count() == 1


def test_a_failing_changes_sync_shows_on_the_installation_and_job_pages(
    admin_client: Client, synced: FakeShoptet, onboarded: Installation, other_onboarded: Installation
) -> None:
    synced.add_fault(
        "GET", r"^/api/invoices/changes$", 403, error_code="invalid-token-no-rights", message="No rights.", times=2
    )
    job = sync_changes.sync_changes(
        job=sync_jobs.request_sync(installation=onboarded, resource="invoices", mode="changes", cause="test")
    )
    sync_changes.sync_changes(
        job=sync_jobs.request_sync(installation=onboarded, resource="invoices", mode="changes", cause="test")
    )
    cursor = SyncCursor.objects.get(installation=onboarded, resource="invoices")
    assert cursor.failed_at is not None and cursor.retry_at is not None

    page = admin_client.get(f"/admin/installations/installation/{onboarded.pk}/change/").content.decode()
    other_page = admin_client.get(f"/admin/installations/installation/{other_onboarded.pk}/change/").content.decode()
    jobs = admin_client.get("/admin/sync/syncjob/", {"eshop": str(onboarded.eshop_id)}).content.decode()

    assert cursor.failures == 2
    assert (
        f"last invoices changes sync failed at {cursor.failed_at:%Y-%m-%d %H:%M} UTC (2 runs in a row), "
        f"retrying at {cursor.retry_at:%Y-%m-%d %H:%M} UTC: HTTP 403 invalid-token-no-rights No rights."
    ) in page
    assert "Changes cursors" in page
    assert "Every /changes run since the last failure completed." in other_page
    assert "failed at" not in other_page
    # Only the run that the cursor retries carries the retry time, not the earlier failure.
    assert jobs.count(f"retrying at {cursor.retry_at:%Y-%m-%d %H:%M} UTC") == 1
    assert cursor.failed_job_id != job.pk
