"""GET /metrics: Prometheus text with the platform's counters and what the database knows."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from config import metrics
from installations.models import Installation
from rollups import services as rollups
from shoptet_api.client import ShoptetClient
from sync.models import SyncJob
from tests.fakes.shoptet import FakeShoptet
from webhooks.models import WebhookDelivery

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_backoff")]


def metric_lines(client: Client) -> list[str]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return [line for line in response.content.decode().splitlines() if not line.startswith("#")]


def test_api_calls_tokens_and_rate_limits_are_counted(
    client: Client, installation: Installation, other_installation: Installation, fake_shoptet: FakeShoptet
) -> None:
    fake_shoptet.add_fault("GET", r"/api/eshop", 429, headers={"Retry-After": "0"})
    ShoptetClient(installation).get_eshop()
    ShoptetClient(other_installation).get_order(next(iter(fake_shoptet.eshops[other_installation.eshop_id].orders)))

    lines = metric_lines(client)

    assert 'shoptet_api_requests_total{endpoint="/api/eshop",method="GET",status="429"} 1.0' in lines
    assert 'shoptet_api_requests_total{endpoint="/api/eshop",method="GET",status="200"} 1.0' in lines
    assert 'shoptet_api_requests_total{endpoint="/api/orders/{id}",method="GET",status="200"} 1.0' in lines
    assert 'shoptet_api_rate_limited_total{endpoint="/api/eshop",method="GET"} 1.0' in lines
    assert "shoptet_api_tokens_minted_total 2.0" in lines


def test_installations_and_queues_are_reported(client: Client, installation: Installation) -> None:
    installation.transition_to(Installation.Status.SUSPENDED, cause="test")

    lines = metric_lines(client)

    assert 'platform_installations{status="suspended"} 1.0' in lines
    assert 'platform_installations{status="active"} 0.0' in lines
    assert {line.split(" ")[0] for line in lines if line.startswith("celery_queue_length")} == {
        'celery_queue_length{queue="priority"}',
        'celery_queue_length{queue="default"}',
        'celery_queue_length{queue="shoptet"}',
        'celery_queue_length{queue="imports"}',
    }


def test_order_codes_never_become_labels(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    code = fake_shoptet.create_order(installation.eshop_id, code="2026/ZLU-15")
    ShoptetClient(installation).get_order(code)

    assert set(metrics.snapshot("shoptet_api_requests")) == {
        '{"endpoint": "/api/orders/{id}", "method": "GET", "status": "200"}'
    }


def test_only_get(client: Client) -> None:
    assert client.post("/metrics").status_code == 405


def test_metrics_answer_while_the_metrics_store_is_down(
    client: Client, installation: Installation, settings: pytest.FixtureRequest
) -> None:
    # Nothing listens on port 1: every Redis call fails at once, as with Redis stopped.
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # type: ignore[attr-defined]
    metrics._redis.cache_clear()
    try:
        metrics.increment("install_callback_refused", reason="missing_code")  # kept in this process instead
        lines = metric_lines(client)
    finally:
        metrics._redis.cache_clear()
        with metrics._local_lock:  # this process's stand-in count must not reach later tests
            metrics._local_counts.clear()

    assert 'platform_installations{status="active"} 1.0' in lines
    assert 'install_callback_refused_total{reason="missing_code"} 1.0' in lines
    assert "platform_metrics_store_up 0.0" in lines
    assert not [line for line in lines if line.startswith("celery_queue_length")]


def test_deliveries_and_jobs_come_from_the_rollups_totals_not_from_the_logs(
    client: Client, installation: Installation, django_assert_max_num_queries: Any
) -> None:
    long_ago = timezone.now() - timedelta(hours=1)
    for event, status in [("order:update", "processed")] * 3 + [("x:y", "rejected"), ("order:update", "received")]:
        WebhookDelivery.objects.create(
            installation=installation, event=event, status=status, received_at=long_ago, processed_at=long_ago
        )
    job = SyncJob.objects.create(installation=installation, resource="orders", mode="changes", status="completed")
    SyncJob.objects.filter(pk=job.pk).update(created_at=long_ago, finished_at=long_ago + timedelta(seconds=12))
    rollups.roll_up()
    WebhookDelivery.objects.filter(status="processed").delete()  # the log's rows go; the totals stay

    with django_assert_max_num_queries(6):
        lines = metric_lines(client)

    assert [line for line in lines if line.startswith(("webhook_deliveries_total", "sync_job"))] == [
        'webhook_deliveries_total{event="order:update",status="processed"} 3.0',
        'webhook_deliveries_total{event="order:update",status="received"} 1.0',
        'webhook_deliveries_total{event="other",status="rejected"} 1.0',
        'sync_job_duration_seconds_count{mode="changes",resource="orders",status="completed"} 1.0',
        'sync_job_duration_seconds_sum{mode="changes",resource="orders",status="completed"} 12.0',
    ]
    # Still waiting, whatever the rollup counted it as: the backlog is read now, up to its cap.
    assert "webhook_deliveries_pending 1.0" in lines


def test_the_backlog_is_counted_only_up_to_its_cap(
    client: Client, installation: Installation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "PENDING_COUNTED_UP_TO", 3)
    WebhookDelivery.objects.bulk_create(
        [WebhookDelivery(installation=installation, event="order:create") for _ in range(5)]
    )

    assert "webhook_deliveries_pending 3.0" in metric_lines(client)
