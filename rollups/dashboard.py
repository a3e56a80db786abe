"""What the admin dashboard draws from the hourly statistics: three queries, whatever the number of e-shops."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Sum
from django.utils import timezone

from installations.models import Installation
from rollups import charts, services
from rollups.models import HourlyStat
from sync.models import SyncJob
from webhooks.models import WebhookDelivery

CHART_HOURS = 48
TOP_FAILING = 10
STATUS_COLOURS: dict[str, str] = {
    WebhookDelivery.Status.RECEIVED: charts.PALETTE[5],
    WebhookDelivery.Status.PROCESSED: charts.PALETTE[2],
    WebhookDelivery.Status.FAILED: charts.PALETTE[1],
    WebhookDelivery.Status.REJECTED: charts.PALETTE[4],
    WebhookDelivery.Status.IGNORED: charts.PALETTE[3],
}


@dataclass(frozen=True)
class FailingShop:
    installation: Installation | None
    installation_id: int
    failures: int


@dataclass(frozen=True)
class JobOutcome:
    resource: str
    mode: str
    status: str
    jobs: int
    average_seconds: float


def chart_context(now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    hours = [services.hour_of(now) - timedelta(hours=back) for back in range(CHART_HOURS - 1, -1, -1)]
    figures: defaultdict[str, defaultdict[str, dict[datetime, float]]] = defaultdict(lambda: defaultdict(dict))
    rows = HourlyStat.objects.filter(hour__gte=hours[0]).exclude(series=services.FAILURES)
    for series, hour, label, value in rows.values_list("series", "hour", "label", "value"):
        figures[series][label][hour] = value

    def along(series: str, label: str = "") -> list[float]:
        return [figures[series][label].get(hour, 0.0) for hour in hours]

    deliveries = [
        charts.Series(str(name), along(services.DELIVERIES, value), STATUS_COLOURS[value])
        for value, name in WebhookDelivery.Status.choices
    ]
    p50, p99 = _percentiles(figures[services.LATENCY], hours)
    job_series = _jobs_by_outcome(figures[services.JOBS], hours)
    api = [
        charts.Series("Calls", along(services.API_CALLS), charts.PALETTE[0]),
        charts.Series("429 answers", along(services.API_RATE_LIMITED), charts.PALETTE[1]),
    ]
    return {
        "chart_hours": CHART_HOURS,
        "charts": [
            ("Webhook deliveries per hour by status", deliveries, charts.stacked_bars("Deliveries", hours, deliveries)),
            (
                "Webhook to row latency per hour (p50, p99)",
                [charts.Series("p50", p50, charts.PALETTE[0]), charts.Series("p99", p99, charts.PALETTE[1])],
                charts.lines(
                    "Latency",
                    hours,
                    [charts.Series("p50", p50, charts.PALETTE[0]), charts.Series("p99", p99, charts.PALETTE[1])],
                    " s",
                ),
            ),
            ("Sync jobs per hour by outcome", job_series, charts.stacked_bars("Sync jobs", hours, job_series)),
            ("Shoptet API calls and 429s per hour", api, charts.lines("Shoptet API calls", hours, api)),
        ],
        "job_outcomes": _job_outcomes(figures[services.JOBS], figures[services.JOB_SECONDS]),
        "failing_shops": _failing_shops(hours[0]),
    }


def _percentiles(histogram: dict[str, dict[datetime, float]], hours: list[datetime]) -> tuple[list[float], list[float]]:
    """Per hour, the upper bound of the bucket holding the 50th and the 99th percentile (0 without data)."""
    p50: list[float] = []
    p99: list[float] = []
    bounds = [(bound, "inf" if math.isinf(bound) else f"{bound:g}") for bound in services.LATENCY_BUCKETS]
    finite_top = services.LATENCY_BUCKETS[-2]
    for hour in hours:
        counts = [(bound, histogram.get(label, {}).get(hour, 0.0)) for bound, label in bounds]
        total = sum(count for _, count in counts)
        for quantile, out in ((0.5, p50), (0.99, p99)):
            if not total:
                out.append(0.0)
                continue
            seen = 0.0
            for bound, count in counts:
                seen += count
                if seen >= quantile * total:
                    out.append(finite_top if math.isinf(bound) else bound)
                    break
    return p50, p99


def _jobs_by_outcome(jobs: dict[str, dict[datetime, float]], hours: list[datetime]) -> list[charts.Series]:
    by_status: defaultdict[str, list[float]] = defaultdict(lambda: [0.0] * len(hours))
    for label, per_hour in jobs.items():
        status = label.rsplit("/", 1)[-1]
        for index, hour in enumerate(hours):
            by_status[status][index] += per_hour.get(hour, 0.0)
    colours: dict[str, str] = {SyncJob.Status.COMPLETED: charts.PALETTE[2], SyncJob.Status.FAILED: charts.PALETTE[1]}
    return [
        charts.Series(str(name), by_status.get(value, [0.0] * len(hours)), colours.get(value, charts.PALETTE[5]))
        for value, name in SyncJob.Status.choices
        if value in (SyncJob.Status.COMPLETED, SyncJob.Status.FAILED) or value in by_status
    ]


def _job_outcomes(
    jobs: dict[str, dict[datetime, float]], seconds: dict[str, dict[datetime, float]]
) -> list[JobOutcome]:
    outcomes = []
    for label, per_hour in sorted(jobs.items()):
        resource, mode, status = [*label.split("/"), "", "", ""][:3]
        count = sum(per_hour.values())
        total_seconds = sum(seconds.get(label, {}).values())
        if count:
            outcomes.append(JobOutcome(resource, mode, status, int(count), total_seconds / count))
    return outcomes


def _failing_shops(since: datetime) -> list[FailingShop]:
    top = list(
        HourlyStat.objects.filter(series=services.FAILURES, hour__gte=since)
        .values("label")
        .annotate(failures=Sum("value"))
        .order_by("-failures", "label")[:TOP_FAILING]
    )
    ids = [int(row["label"]) for row in top]
    installations = Installation.objects.only("pk", "eshop_id", "name").in_bulk(ids)
    return [FailingShop(installations.get(pk), pk, int(row["failures"])) for pk, row in zip(ids, top, strict=True)]
