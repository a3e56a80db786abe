"""Fills the hourly statistics from the rows that are new since the last run.

Each source is read in primary-key order from its watermark, a bounded batch per run, so a run costs the same
with a thousand deliveries or a million. A row is counted once, in the hour it arrived, when its outcome is
known: a delivery once it left `received`, a sync job once it finished. The watermark stops at the first row
still under way, so that row is counted later with its outcome; one that stays under way past a horizon (a
suspended e-shop's deliveries, a job that hangs) is counted as it stands, so nothing holds the rollup for long.
Rows newer than COMMIT_LAG are left for the next run: a concurrent insert may commit a lower key a moment later.
The same counts also go to running totals (`Total`), never pruned, which /metrics reports as counters: a scrape
then reads a few dozen rows instead of grouping the whole delivery log.

The Shoptet API counters (config.metrics) only ever grow; each run adds their growth since the previous run to
the current hour.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from config import metrics
from rollups.models import HourlyStat, Total, Watermark
from sync.models import SyncJob
from webhooks.events import metric_label
from webhooks.models import WebhookDelivery

logger = logging.getLogger(__name__)

# Up to 20,000 rows a minute per source: a sustained 330 webhooks/s before the rollup falls behind.
BATCH = 20_000
COMMIT_LAG = timedelta(seconds=30)
DELIVERY_HORIZON = timedelta(minutes=15)
# A snapshot job may wait up to 3 hours for Shoptet's result.
JOB_HORIZON = timedelta(hours=4)
RETENTION = timedelta(days=30)
# Upper bounds, in seconds, of the latency histogram's buckets; the last one takes everything slower.
LATENCY_BUCKETS: tuple[float, ...] = (0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, math.inf)

DELIVERIES = "delivery"  # label: status
LATENCY = "latency"  # label: a bucket's upper bound in seconds ("inf" for the last)
JOBS = "job"  # label: resource/mode/status
JOB_SECONDS = "job_seconds"  # label: resource/mode/status
FAILURES = "failures"  # label: installation id
API_CALLS = "api_calls"
API_RATE_LIMITED = "api_rate_limited"
API_COUNTERS = {API_CALLS: "shoptet_api_requests", API_RATE_LIMITED: "shoptet_api_rate_limited"}


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def bucket_label(seconds: float) -> str:
    bound = next(bound for bound in LATENCY_BUCKETS if seconds <= bound)
    return "inf" if math.isinf(bound) else f"{bound:g}"


@dataclass
class Tally:
    """Additions to HourlyStat and to the running totals collected in memory during one run."""

    values: defaultdict[tuple[str, datetime, str], float] = field(default_factory=lambda: defaultdict(float))
    totals: defaultdict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))

    def add(self, series: str, hour: datetime, label: str = "", value: float = 1) -> None:
        self.values[(series, hour, label)] += value

    def add_total(self, series: str, label: str, value: float = 1) -> None:
        self.totals[(series, label)] += value


def roll_up(*, now: datetime | None = None) -> Tally:
    """One run: count what is new, write it, move the watermarks; all or nothing."""
    now = now or timezone.now()
    tally = Tally()
    for source in ("deliveries", "jobs", "api"):
        Watermark.objects.get_or_create(source=source)
    with transaction.atomic():
        # The lock makes overlapping runs wait instead of counting the same rows twice.
        marks = {mark.source: mark for mark in Watermark.objects.select_for_update().order_by("source")}
        _roll_up_deliveries(marks["deliveries"], tally, now)
        _roll_up_jobs(marks["jobs"], tally, now)
        _roll_up_api_counters(marks["api"], tally, now)
        _write(tally)
        for mark in marks.values():
            mark.save(update_fields=["last_id", "counters"])
        HourlyStat.objects.filter(hour__lt=now - RETENTION).delete()
    return tally


def _roll_up_deliveries(mark: Watermark, tally: Tally, now: datetime) -> None:
    rows = (
        WebhookDelivery.objects.filter(pk__gt=mark.last_id)
        .order_by("pk")
        .values_list("pk", "installation_id", "event", "status", "received_at", "processed_at")[:BATCH]
    )
    for pk, installation_id, event, status, received_at, processed_at in rows:
        if received_at > now - COMMIT_LAG:
            break
        if status == WebhookDelivery.Status.RECEIVED and received_at > now - DELIVERY_HORIZON:
            break
        hour = hour_of(received_at)
        tally.add(DELIVERIES, hour, status)
        tally.add_total(DELIVERIES, f"{metric_label(event)}/{status}")
        if status == WebhookDelivery.Status.PROCESSED and processed_at is not None:
            tally.add(LATENCY, hour, bucket_label(max((processed_at - received_at).total_seconds(), 0.0)))
        if status == WebhookDelivery.Status.FAILED and installation_id is not None:
            tally.add(FAILURES, hour, str(installation_id))
        mark.last_id = pk


def _roll_up_jobs(mark: Watermark, tally: Tally, now: datetime) -> None:
    rows = (
        SyncJob.objects.filter(pk__gt=mark.last_id)
        .order_by("pk")
        .values_list("pk", "installation_id", "resource", "mode", "status", "created_at", "finished_at")[:BATCH]
    )
    for pk, installation_id, resource, mode, status, created_at, finished_at in rows:
        if created_at > now - COMMIT_LAG:
            break
        if finished_at is None and created_at > now - JOB_HORIZON:
            break
        label = f"{resource}/{mode}/{status}"
        hour = hour_of(created_at)
        tally.add(JOBS, hour, label)
        if finished_at is not None:
            seconds = max((finished_at - created_at).total_seconds(), 0.0)
            tally.add(JOB_SECONDS, hour, label, seconds)
            tally.add_total(JOBS, label)
            tally.add_total(JOB_SECONDS, label, seconds)
        if status == SyncJob.Status.FAILED:
            tally.add(FAILURES, hour, str(installation_id))
        mark.last_id = pk


def _roll_up_api_counters(mark: Watermark, tally: Tally, now: datetime) -> None:
    try:
        totals = {series: sum(metrics.snapshot(counter).values()) for series, counter in API_COUNTERS.items()}
    except redis.RedisError as error:
        # The growth is not lost: the next run that reaches the store adds it (to its own hour).
        logger.warning("rollups: metrics store unavailable: %s", type(error).__name__)
        return
    for series, total in totals.items():
        previous = float(mark.counters.get(series, 0.0))
        # A total below the last one means the store was emptied: everything in it is new.
        growth = total - previous if total >= previous else total
        if growth:
            tally.add(series, hour_of(now), "", growth)
    mark.counters = totals


def _write(tally: Tally) -> None:
    """Add the tally to the stored figures, creating the rows that are missing (PostgreSQL and SQLite alike)."""
    hourly = connection.ops.quote_name(HourlyStat._meta.db_table)
    totals = connection.ops.quote_name(Total._meta.db_table)
    with connection.cursor() as cursor:
        if tally.values:
            cursor.executemany(
                f"INSERT INTO {hourly} (series, hour, label, value) VALUES (%s, %s, %s, %s) "  # noqa: S608 (names)
                f"ON CONFLICT (series, hour, label) DO UPDATE SET value = {hourly}.value + excluded.value",
                list(_rows(tally)),
            )
        if tally.totals:
            cursor.executemany(
                f"INSERT INTO {totals} (series, label, value) VALUES (%s, %s, %s) "  # noqa: S608 (names only)
                f"ON CONFLICT (series, label) DO UPDATE SET value = {totals}.value + excluded.value",
                [(series, label, value) for (series, label), value in sorted(tally.totals.items())],
            )


def hourly_sums(series: str, *, since: datetime) -> dict[str, float]:
    """Each label's figures of one series summed over the hours from the one holding `since`."""
    rows = HourlyStat.objects.filter(series=series, hour__gte=hour_of(since)).values_list("label").order_by()
    return dict(rows.annotate(total=Sum("value")).values_list("label", "total"))


def totals(series: str) -> dict[str, float]:
    """The running total of each label of one series."""
    return dict(Total.objects.filter(series=series).values_list("label", "value"))


def _rows(tally: Tally) -> Iterable[tuple[str, datetime, str, float]]:
    for (series, hour, label), value in sorted(tally.values.items()):
        yield series, hour, label, value


def describe(tally: Tally) -> str:
    """The run's additions, for a debug log line."""
    return json.dumps({f"{s}:{label}": v for (s, _, label), v in tally.values.items()})
