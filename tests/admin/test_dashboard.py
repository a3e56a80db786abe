"""The dashboard at the admin index: installations, deliveries of the last 24 h, failing and running jobs, the
slowest Shoptet API calls; a fixed number of queries however much there is."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from config import metrics
from installations.models import Installation
from rollups import services as rollups
from sync.models import SyncJob
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db


def test_the_index_shows_the_dashboard(admin_client: Client, tenants: tuple[Installation, Installation]) -> None:
    mine, theirs = tenants
    theirs.transition_to(Installation.Status.SUSPENDED, cause="test")
    WebhookDelivery.objects.create(
        installation=mine,
        eshop_id=mine.eshop_id,
        event="order:create",
        event_instance="OLD",
        status="failed",
        received_at=timezone.now() - timedelta(days=2),
    )
    rollups.roll_up(now=timezone.now() + rollups.COMMIT_LAG)

    response = admin_client.get("/admin/")

    assert response.status_code == 200
    context = response.context
    assert [(row.label, row.value) for row in context["installations_by_status"]] == [
        ("Active", 1),
        ("Suspended", 1),
        ("Uninstalled", 0),
        ("Terminated", 0),
    ]
    # Three per tenant in the last 24 h, as the rollup counted them; the two-day-old failure is not counted.
    assert [(row.label, row.value) for row in context["deliveries_by_status"]] == [
        ("Waiting now", 0),
        ("Processed", 2),
        ("Failed", 2),
        ("Rejected", 2),
        ("Ignored", 0),
    ]
    assert {job.installation for job in context["failed_jobs"]} == {mine, theirs}
    assert all(job.status == "failed" for job in context["failed_jobs"])
    assert [job.status for job in context["running_jobs"]] == ["running", "running"]
    assert set(context["queue_lengths"]) == {"priority", "default", "shoptet", "imports"}
    html = response.content.decode()
    assert "Installations by status" in html
    assert "/admin/installations/installation/?status__exact=suspended" in html
    assert "/admin/webhooks/webhookdelivery/?status__exact=failed" in html
    assert "the result file was truncated" in html
    # Onboarding called Shoptet for both e-shops: those calls are the slowest so far.
    assert "GET /api/eshop" in html
    assert "POST /api/webhooks/renew-signature-key" in html


def test_the_slowest_calls_are_listed_slowest_first(admin_client: Client, db: None) -> None:
    metrics.observe_api_call(eshop_id=1, method="GET", endpoint="/api/orders", status=200, seconds=0.2)
    metrics.observe_api_call(eshop_id=2, method="GET", endpoint="/api/orders/{id}", status=503, seconds=4.5)
    metrics.observe_api_call(eshop_id=1, method="GET", endpoint="/api/orders/{id}", status=200, seconds=0.5)

    response = admin_client.get("/admin/")

    calls = [(call.eshop_id, call.endpoint, call.status, call.seconds) for call in response.context["slowest_calls"]]
    assert calls == [(2, "/api/orders/{id}", 503, 4.5), (1, "/api/orders/{id}", 200, 0.5), (1, "/api/orders", 200, 0.2)]
    timings = [(t.endpoint, t.calls, t.average_seconds) for t in response.context["endpoint_timings"]]
    assert timings == [("/api/orders/{id}", 2, 2.5), ("/api/orders", 1, 0.2)]


def test_the_dashboard_takes_the_same_queries_for_two_or_twenty_jobs(
    admin_client: Client, tenants: tuple[Installation, Installation], django_assert_max_num_queries
) -> None:
    mine, theirs = tenants
    admin_client.get("/admin/")  # sessions and content types cached
    with django_assert_max_num_queries(12) as few:
        admin_client.get("/admin/")
    for number in range(20):
        SyncJob.objects.create(
            installation=mine if number % 2 else theirs,
            resource="invoices",
            mode="snapshot",
            status="failed",
            finished_at=timezone.now(),
            error=f"failure {number}",
        )

    with django_assert_max_num_queries(len(few.captured_queries)):
        response = admin_client.get("/admin/")

    assert len(response.context["failed_jobs"]) == 10
