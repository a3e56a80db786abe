"""The hourly statistics: exact against seeded rows, each row counted once, with its outcome."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from config import metrics
from installations.models import Installation
from rollups import services
from rollups.models import HourlyStat
from sync.models import SyncJob
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 3, 15, 30, tzinfo=UTC)
TEN = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
ELEVEN = datetime(2026, 12, 3, 11, 0, tzinfo=UTC)


def delivery(installation: Installation, status: str, received_at: datetime, latency: float | None = None) -> None:
    WebhookDelivery.objects.create(
        installation=installation,
        eshop_id=installation.eshop_id,
        event="order:update",
        status=status,
        received_at=received_at,
        processed_at=received_at + timedelta(seconds=latency) if latency is not None else None,
    )


def job(installation: Installation, status: str, created_at: datetime, seconds: float | None) -> SyncJob:
    created = SyncJob.objects.create(installation=installation, resource="orders", mode="changes", status=status)
    finished_at = created_at + timedelta(seconds=seconds) if seconds is not None else None
    SyncJob.objects.filter(pk=created.pk).update(created_at=created_at, finished_at=finished_at)
    return created


def stored() -> dict[tuple[str, str, str], float]:
    return {(s.series, f"{s.hour:%H}", s.label): s.value for s in HourlyStat.objects.all()}


def test_deliveries_and_jobs_are_counted_exactly_once_per_hour(
    installation: Installation, other_installation: Installation
) -> None:
    WebhookDelivery.objects.all().delete()
    SyncJob.objects.all().delete()
    delivery(installation, "processed", TEN + timedelta(minutes=5), latency=0.3)
    delivery(installation, "processed", TEN + timedelta(minutes=6), latency=4)
    delivery(other_installation, "failed", TEN + timedelta(minutes=7))
    delivery(other_installation, "failed", ELEVEN + timedelta(minutes=1))
    delivery(installation, "rejected", ELEVEN + timedelta(minutes=2))
    job(installation, "completed", TEN + timedelta(minutes=1), 90)
    job(other_installation, "failed", ELEVEN + timedelta(minutes=1), 30)

    services.roll_up(now=NOW)
    services.roll_up(now=NOW + timedelta(minutes=1))  # nothing new: nothing added

    figures = {key: value for key, value in stored().items() if not key[0].startswith("api")}
    assert figures == {
        ("delivery", "10", "processed"): 2,
        ("delivery", "10", "failed"): 1,
        ("delivery", "11", "failed"): 1,
        ("delivery", "11", "rejected"): 1,
        ("latency", "10", "0.5"): 1,
        ("latency", "10", "5"): 1,
        ("failures", "10", str(other_installation.pk)): 1,
        ("failures", "11", str(other_installation.pk)): 2,
        ("job", "10", "orders/changes/completed"): 1,
        ("job", "11", "orders/changes/failed"): 1,
        ("job_seconds", "10", "orders/changes/completed"): 90,
        ("job_seconds", "11", "orders/changes/failed"): 30,
    }


def test_a_delivery_under_way_is_counted_once_it_is_settled(installation: Installation) -> None:
    WebhookDelivery.objects.all().delete()
    SyncJob.objects.all().delete()
    received_at = NOW - timedelta(minutes=5)
    delivery(installation, "received", received_at)
    delivery(installation, "processed", received_at + timedelta(seconds=1), latency=1)

    services.roll_up(now=NOW)
    assert HourlyStat.objects.filter(series="delivery").count() == 0  # the first one holds the watermark

    WebhookDelivery.objects.filter(status="received").update(status="processed", processed_at=received_at)
    services.roll_up(now=NOW + timedelta(minutes=1))

    assert {label: s for (series, _, label), s in stored().items() if series == "delivery"} == {"processed": 2}


def test_a_run_reads_a_bounded_batch(installation: Installation, monkeypatch: pytest.MonkeyPatch) -> None:
    WebhookDelivery.objects.all().delete()
    monkeypatch.setattr(services, "BATCH", 3)
    for minute in range(5):
        delivery(installation, "rejected", TEN + timedelta(minutes=minute))

    services.roll_up(now=NOW)
    assert HourlyStat.objects.get(series="delivery").value == 3
    services.roll_up(now=NOW)
    assert HourlyStat.objects.get(series="delivery").value == 5


def test_api_calls_and_rate_limits_are_added_to_the_hour_they_grew_in(db: None) -> None:
    metrics.observe_api_call(eshop_id=1, method="GET", endpoint="/api/orders", status=200, seconds=0.1)
    services.roll_up(now=TEN)
    metrics.observe_api_call(eshop_id=1, method="GET", endpoint="/api/orders", status=429, seconds=0.1)
    metrics.observe_api_call(eshop_id=1, method="GET", endpoint="/api/orders", status=200, seconds=0.1)
    services.roll_up(now=ELEVEN)

    assert {key: value for key, value in stored().items() if key[0].startswith("api")} == {
        ("api_calls", "10", ""): 1,
        ("api_calls", "11", ""): 2,
        ("api_rate_limited", "11", ""): 1,
    }
