"""Operations: Shoptet call durations in /metrics, queues by task, and the e-shop id on every task's log line."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from django.test import Client
from django.utils import timezone

from config import metrics
from config.celery import app as celery_app
from config.logs import EshopContextFilter, _eshop_id
from installations.models import Installation
from shoptet_api.client import ShoptetClient
from sync import tasks as sync_tasks
from sync.models import SyncJob
from tests.api.conftest import SLASHED, tenants
from tests.fakes.shoptet import FakeShoptet
from webhooks import tasks as webhook_tasks
from webhooks.models import WebhookDelivery

__all__ = ["tenants"]

QUEUES = {
    "installations.tasks.onboard": "priority",
    "installations.tasks.relay_pending_onboarding": "default",
    "installations.tasks.purge_ended_tenants": "default",
    "webhooks.tasks.process_delivery": "shoptet",
    "webhooks.tasks.process_batch": "shoptet",
    "webhooks.tasks.reconcile_webhooks": "shoptet",
    "webhooks.tasks.recover_notifications": "shoptet",
    "webhooks.tasks.relay_deliveries": "default",
    "webhooks.tasks.watch_registrations": "default",
    "webhooks.tasks.watch_notifications": "default",
    "webhooks.tasks.purge_payloads": "default",
    "sync.tasks.import_snapshot": "imports",
    "sync.tasks.start_snapshot": "shoptet",
    "sync.tasks.poll_snapshot": "shoptet",
    "sync.tasks.sync_changes": "shoptet",
    "sync.tasks.refresh_documents": "shoptet",
    "sync.tasks.relay_sync_work": "default",
    "sync.tasks.sync_changes_everywhere": "default",
    "sync.tasks.request_changes": "default",
    "config.sweeps.send_chunk": "default",
    "notifications.tasks.send_notification": "default",
    "notifications.tasks.relay_notifications": "default",
    "notifications.tasks.notify_silent_webhooks": "default",
    "rollups.tasks.roll_up": "default",
}


class Records(logging.Handler):
    """Every record logged while installed, with the e-shop id as the JSON lines get it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.addFilter(EshopContextFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def of(self, logger: str) -> list[logging.LogRecord]:
        return [record for record in self.records if record.name == logger]


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_shoptet_call_durations_are_a_summary_by_endpoint(
    client: Client, installation: Installation, fake_shoptet: FakeShoptet
) -> None:
    ShoptetClient(installation).get_eshop()
    ShoptetClient(installation).get_eshop()

    lines = [line for line in client.get("/metrics").content.decode().splitlines() if not line.startswith("#")]

    assert 'shoptet_api_request_duration_seconds_count{endpoint="/api/eshop",method="GET"} 2.0' in lines
    total = next(line for line in lines if line.startswith("shoptet_api_request_duration_seconds_sum{"))
    assert total.startswith('shoptet_api_request_duration_seconds_sum{endpoint="/api/eshop",method="GET"} ')
    assert 0 < float(total.rsplit(" ", 1)[1]) < 10
    slowest = metrics.slowest_api_calls()
    assert [(call.eshop_id, call.method, call.endpoint, call.status) for call in slowest] == [
        (installation.eshop_id, "GET", "/api/eshop", 200)
    ] * 2


@pytest.mark.django_db
def test_only_the_slowest_calls_of_a_day_are_kept(db: None) -> None:
    for number in range(metrics.SLOWEST_KEPT + 5):
        metrics.observe_api_call(eshop_id=1, method="GET", endpoint="/api/orders", status=200, seconds=number / 100)

    kept = metrics.slowest_api_calls(limit=100)

    assert len(kept) == metrics.SLOWEST_KEPT
    assert kept[0].seconds == (metrics.SLOWEST_KEPT + 4) / 100
    assert kept[-1].seconds == 5 / 100


# ---------------------------------------------------------------------------
# Queues
# ---------------------------------------------------------------------------


def test_every_task_is_routed_to_its_queue() -> None:
    celery_app.loader.import_default_modules()
    ours = {
        name
        for name in celery_app.tasks
        if name.split(".")[0] in {"config", "installations", "webhooks", "sync", "notifications", "rollups"}
    }

    routed = {name: celery_app.amqp.router.route({}, name, (), {})["queue"].name for name in ours}

    assert routed == QUEUES
    # Routes live in CELERY_TASK_ROUTES only: Celery deprecates the per-task `queue` attribute.
    assert all(getattr(celery_app.tasks[name], "queue", None) is None for name in ours)


# ---------------------------------------------------------------------------
# The e-shop id on every task's log lines
# ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_webhook_processing_logs_with_the_eshop_id(
    records: Records, tenants: tuple[Installation, Installation]
) -> None:
    _, theirs = tenants
    delivery = WebhookDelivery.objects.create(
        installation=theirs,
        eshop_id=theirs.eshop_id,
        event="order:update",
        event_instance=SLASHED,
        event_created=timezone.now(),
        idempotency_key="order:update 2026/000777 now",
        signature_valid=True,
        status="received",
    )

    records.records.clear()

    webhook_tasks.process_delivery.apply(args=(delivery.pk,))

    processed = records.of("webhooks.processing")
    assert processed, "the processing logged nothing"
    assert {record.eshop_id for record in processed} == {theirs.eshop_id}  # type: ignore[attr-defined]
    assert _eshop_id.get() is None  # unbound once the task is done


@pytest.mark.django_db
def test_sync_tasks_log_with_the_eshop_id(records: Records, tenants: tuple[Installation, Installation]) -> None:
    mine, _ = tenants
    job = SyncJob.objects.create(installation=mine, resource="orders", mode="changes")
    records.records.clear()

    sync_tasks.sync_changes.apply(args=(job.pk,))

    assert SyncJob.objects.get(pk=job.pk).status == "completed"
    logged = [record for record in records.records if record.name.startswith(("sync", "shoptet_api"))]
    assert logged
    assert {record.eshop_id for record in logged} == {mine.eshop_id}  # type: ignore[attr-defined]


@pytest.mark.django_db
def test_fleet_wide_tasks_log_without_an_eshop_id(records: Records, installation: Installation) -> None:
    WebhookDelivery.objects.create(eshop_id=installation.eshop_id, event="order:create", status="ignored")
    records.records.clear()

    webhook_tasks.purge_payloads.apply()

    purged = records.of("webhooks.tasks")
    assert [record.eshop_id for record in purged] == [None]  # type: ignore[attr-defined]
