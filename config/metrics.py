"""Prometheus metrics at /metrics, and the figures behind the admin dashboard's slowest API calls.

Counters (Shoptet API calls and their durations, tokens minted, 429s) are incremented by every web and
worker process, so with Redis they live there (one hash per counter) and every process adds to the same
numbers; in embedded mode they are kept per process. The slowest single calls of each day are kept the
same way (a sorted set per day). Deliveries and sync jobs are reported from the running totals the rollup
keeps (rollups.services), so a scrape never groups the logs themselves; installations, the deliveries
still waiting (up to a cap) and the queue lengths are read when Prometheus scrapes.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import redis
from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

logger = logging.getLogger(__name__)

COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "shoptet_api_requests": ("Shoptet API calls by endpoint and HTTP status", ("method", "endpoint", "status")),
    "shoptet_api_rate_limited": ("429 answers from Shoptet by endpoint", ("method", "endpoint")),
    "shoptet_api_tokens_minted": ("API access tokens minted at the partner OAuth server", ()),
    "webhook_deliveries_rate_limited": (
        "Rejected webhook calls answered 429 and not stored (over the per-address limit), by reason",
        ("reason",),
    ),
    "install_callback_refused": ("Install callbacks refused before any code exchange, by reason", ("reason",)),
    "shoptet_api_bucket_pauses": (
        "Shoptet API calls held back because the e-shop's leaky bucket was nearly full",
        (),
    ),
    "api_throttle_unavailable": ("REST requests let through unthrottled: the rate limit's cache was down", ("scope",)),
}
# Every label value comes from a fixed set; anything else (a value first seen in outside input) is this.
OTHER = "other"
PENDING_COUNTED_UP_TO = 100_000
# Shoptet API call durations: a Prometheus summary (sum and count) per method and endpoint.
DURATION = "shoptet_api_request_duration_seconds"
DURATION_LABELS = ("method", "endpoint")
QUEUES = ("priority", "default", "shoptet", "imports")
# The slowest calls of each UTC day kept for the dashboard; a day's set expires after two days.
SLOWEST_KEPT = 20
SLOWEST_TTL = timedelta(days=2)

_local_counts: defaultdict[tuple[str, str], float] = defaultdict(float)
_local_slowest: list[tuple[float, str]] = []
_local_lock = threading.Lock()


@dataclass(frozen=True)
class SlowCall:
    at: datetime
    eshop_id: int
    method: str
    endpoint: str
    status: int
    seconds: float


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT,
    )


def _hash_key(name: str) -> str:
    return f"platform:metrics:{name}"


def _field(labels: dict[str, str | int]) -> str:
    return json.dumps({key: str(value) for key, value in sorted(labels.items())})


def _chosen(value: str, choices: list[str]) -> str:
    """A model field's value as a label, when it is one of the field's choices."""
    return value if value in choices else OTHER


def _status_label(status: int) -> str:
    """An HTTP status as a label: only the ones HTTP defines, so an odd server cannot mint new series."""
    return str(status) if 100 <= status <= 599 else OTHER


def increment(name: str, **labels: str | int) -> None:
    """Add one to a counter; a metrics store that is down never breaks the call being counted."""
    field = _field(labels)
    if not settings.REDIS_URL:
        _count_in_process(name, field)
        return
    try:
        _redis().hincrby(_hash_key(name), field, 1)
    except redis.RedisError as error:
        logger.warning("metrics store unavailable: %s", type(error).__name__)
        _count_in_process(name, field)


def increment_in_process(name: str, **labels: str | int) -> None:
    """Add one to a counter in this process only: for counting while the metrics store is known to be down."""
    _count_in_process(name, _field(labels))


def _count_in_process(name: str, field: str) -> None:
    with _local_lock:
        _local_counts[(name, field)] += 1


def observe_api_call(*, eshop_id: int, method: str, endpoint: str, status: int, seconds: float) -> None:
    """Count one Shoptet API call and its duration, and keep it if it is among the day's slowest.

    `endpoint` is the path template (`/api/orders/{id}`): codes never become labels.
    """
    request = _field({"method": method, "endpoint": endpoint, "status": _status_label(status)})
    duration = _field({"method": method, "endpoint": endpoint})
    moment = datetime.now(UTC)
    call = json.dumps(
        {
            "at": moment.isoformat(),
            "eshop_id": eshop_id,
            "method": method,
            "endpoint": endpoint,
            "status": status,
            "seconds": round(seconds, 4),
        }
    )
    if not settings.REDIS_URL:
        with _local_lock:
            _local_counts[("shoptet_api_requests", request)] += 1
            if status == 429:
                _local_counts[("shoptet_api_rate_limited", duration)] += 1
            _local_counts[(f"{DURATION}_sum", duration)] += seconds
            _local_counts[(f"{DURATION}_count", duration)] += 1
            _local_slowest.append((seconds, call))
            _local_slowest.sort(reverse=True)
            del _local_slowest[SLOWEST_KEPT * 2 :]
        return
    day_key = _slowest_key(moment)
    try:
        # One round trip for everything a call records.
        pipeline = _redis().pipeline(transaction=False)
        pipeline.hincrby(_hash_key("shoptet_api_requests"), request, 1)
        if status == 429:
            pipeline.hincrby(_hash_key("shoptet_api_rate_limited"), duration, 1)
        pipeline.hincrbyfloat(_hash_key(f"{DURATION}_sum"), duration, seconds)
        pipeline.hincrby(_hash_key(f"{DURATION}_count"), duration, 1)
        pipeline.zadd(day_key, {call: seconds})
        pipeline.zremrangebyrank(day_key, 0, -(SLOWEST_KEPT + 1))
        pipeline.expire(day_key, SLOWEST_TTL)
        pipeline.execute()
    except redis.RedisError as error:
        logger.warning("metrics store unavailable: %s", type(error).__name__)


def _slowest_key(moment: datetime) -> str:
    return _hash_key(f"slowest_api_calls:{moment:%Y-%m-%d}")


def slowest_api_calls(*, limit: int = 10, within: timedelta = timedelta(hours=24)) -> list[SlowCall]:
    """The slowest single Shoptet API calls of the last `within`, slowest first."""
    now = datetime.now(UTC)
    if settings.REDIS_URL:
        client = _redis()
        raw: list[bytes] = []
        for day in (now, now - timedelta(days=1)):
            raw.extend(client.zrange(_slowest_key(day), 0, -1))  # type: ignore[arg-type]
        members = [member.decode() for member in raw]
    else:
        with _local_lock:
            members = [member for _, member in _local_slowest]
    calls = []
    for member in members:
        data = json.loads(member)
        call = SlowCall(
            at=datetime.fromisoformat(data["at"]),
            eshop_id=int(data["eshop_id"]),
            method=str(data["method"]),
            endpoint=str(data["endpoint"]),
            status=int(data["status"]),
            seconds=float(data["seconds"]),
        )
        if call.at >= now - within:
            calls.append(call)
    return sorted(calls, key=lambda call: call.seconds, reverse=True)[:limit]


@dataclass(frozen=True)
class EndpointTiming:
    method: str
    endpoint: str
    calls: int
    average_seconds: float


def endpoint_timings(*, limit: int = 10) -> list[EndpointTiming]:
    """Shoptet endpoints by their average duration since the counters began, slowest first."""
    sums, counts = _counter_values(f"{DURATION}_sum"), _counter_values(f"{DURATION}_count")
    timings = []
    for field, count in counts.items():
        if count:
            labels = json.loads(field)
            timings.append(
                EndpointTiming(labels["method"], labels["endpoint"], int(count), sums.get(field, 0.0) / count)
            )
    return sorted(timings, key=lambda timing: timing.average_seconds, reverse=True)[:limit]


def _counter_values(name: str) -> dict[str, float]:
    with _local_lock:
        # With Redis, this process's own counts are the ones the store could not take when it was down.
        values = {field: float(count) for (counter, field), count in _local_counts.items() if counter == name}
    if not settings.REDIS_URL:
        return values
    raw: dict[bytes, bytes] = _redis().hgetall(_hash_key(name))  # type: ignore[assignment]
    for field, value in raw.items():
        values[field.decode()] = values.get(field.decode(), 0.0) + float(value)
    return values


class PlatformCollector:
    """Reads every figure at scrape time."""

    def __init__(self) -> None:
        self.store_up = True

    def collect(self) -> Iterator[Metric]:
        yield from self._counters()
        yield self._durations()
        yield self._installations()
        yield from self._deliveries()
        yield self._job_durations()
        yield self._queue_lengths()
        yield self._store_availability()

    def _values(self, name: str) -> dict[str, float]:
        """A counter's values; with the store down, what this process counted itself, so the scrape still answers."""
        try:
            return _counter_values(name)
        except redis.RedisError as error:
            self._store_down(error)
            with _local_lock:
                return {field: float(count) for (counter, field), count in _local_counts.items() if counter == name}

    def _store_down(self, error: redis.RedisError) -> None:
        if self.store_up:
            logger.warning("metrics: metrics store unavailable: %s", type(error).__name__)
        self.store_up = False

    def _store_availability(self) -> Metric:
        family = GaugeMetricFamily("platform_metrics_store_up", "1 when the metrics store (Redis) answered this scrape")
        family.add_metric([], 1 if self.store_up else 0)
        return family

    def _counters(self) -> Iterator[Metric]:
        for name, (documentation, label_names) in COUNTERS.items():
            family = CounterMetricFamily(name, documentation, labels=label_names)
            for field, value in self._values(name).items():
                labels = json.loads(field)
                family.add_metric([labels.get(label, "") for label in label_names], value)
            yield family

    def _durations(self) -> Metric:
        family = SummaryMetricFamily(DURATION, "Seconds Shoptet API calls took", labels=DURATION_LABELS)
        sums = self._values(f"{DURATION}_sum")
        for field, count in self._values(f"{DURATION}_count").items():
            labels = json.loads(field)
            family.add_metric([labels.get(label, "") for label in DURATION_LABELS], int(count), sums.get(field, 0.0))
        return family

    def _installations(self) -> Metric:
        from installations.models import Installation

        family = GaugeMetricFamily("platform_installations", "Installations by status", labels=["status"])
        counts = dict(Installation.objects.values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
        for status in Installation.Status.values:
            family.add_metric([status], counts.get(status, 0))
        return family

    def _deliveries(self) -> Iterator[Metric]:
        from rollups import services as rollups
        from webhooks.models import WebhookDelivery

        settled = CounterMetricFamily(
            "webhook_deliveries",
            "Webhook deliveries by event and status, counted by the rollup once settled (a minute or two late)",
            labels=["event", "status"],
        )
        for label, value in sorted(rollups.totals(rollups.DELIVERIES).items()):
            event, _, status = label.rpartition("/")
            settled.add_metric([event, _chosen(status, WebhookDelivery.Status.values)], value)
        yield settled
        pending = GaugeMetricFamily(
            "webhook_deliveries_pending",
            f"Deliveries received and not yet processed (counted up to {PENDING_COUNTED_UP_TO:,})",
        )
        pending.add_metric([], WebhookDelivery.objects.count_pending(up_to=PENDING_COUNTED_UP_TO))
        yield pending

    def _job_durations(self) -> Metric:
        from rollups import services as rollups
        from sync.models import SyncJob

        family = SummaryMetricFamily(
            "sync_job_duration_seconds",
            "Finished sync jobs and the seconds they took, counted by the rollup (a minute or two late)",
            labels=["resource", "mode", "status"],
        )
        seconds = rollups.totals(rollups.JOB_SECONDS)
        for label, jobs in sorted(rollups.totals(rollups.JOBS).items()):
            resource, mode, status = [*label.split("/"), "", "", ""][:3]
            labels = [
                _chosen(resource, SyncJob.Resource.values),
                _chosen(mode, SyncJob.Mode.values),
                _chosen(status, SyncJob.Status.values),
            ]
            family.add_metric(labels, int(jobs), seconds.get(label, 0.0))
        return family

    def _queue_lengths(self) -> Metric:
        family = GaugeMetricFamily("celery_queue_length", "Tasks waiting in each Celery queue", labels=["queue"])
        try:
            lengths = queue_lengths()
        except redis.RedisError as error:
            # The broker is the same Redis: no length is known, and none is made up.
            self._store_down(error)
            lengths = {}
        for queue, length in lengths.items():
            family.add_metric([queue], length)
        return family


def queue_lengths() -> dict[str, int]:
    if settings.REDIS_URL:
        client = _redis()
        return {queue: int(client.llen(queue)) for queue in QUEUES}
    # The filesystem transport keeps one file per waiting message, named after its queue.
    folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])  # type: ignore[arg-type]
    files = [path.name for path in folder.glob("*.msg")] if folder.is_dir() else []
    return {queue: sum(1 for name in files if name.endswith(f".{queue}.msg")) for queue in QUEUES}


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlatformCollector())
    return registry


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)


def snapshot(name: str) -> dict[str, float]:
    """The counter's current values by label set: the rollups read the API call totals from it."""
    return _counter_values(name)
