"""Prometheus metrics at /metrics.

Counters (Shoptet API calls, tokens minted, 429s) are incremented by every web and worker process, so
with Redis they live there (one hash per counter) and every process adds to the same numbers; in
embedded mode they are kept per process. What the database already knows (deliveries, installations,
job durations) and the queue lengths are read when Prometheus scrapes.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import redis
from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Sum
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

logger = logging.getLogger(__name__)

COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "shoptet_api_requests": ("Shoptet API calls by endpoint and HTTP status", ("method", "endpoint", "status")),
    "shoptet_api_rate_limited": ("429 answers from Shoptet by endpoint", ("method", "endpoint")),
    "shoptet_api_tokens_minted": ("API access tokens minted at the partner OAuth server", ()),
}
QUEUES = ("default", "shoptet", "imports")

_local_counts: Counter[tuple[str, str]] = Counter()
_local_lock = threading.Lock()


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT,
    )


def _hash_key(name: str) -> str:
    return f"platform:metrics:{name}"


def increment(name: str, **labels: str | int) -> None:
    """Add one to a counter; a metrics store that is down never breaks the call being counted."""
    field = json.dumps({key: str(value) for key, value in sorted(labels.items())})
    if not settings.REDIS_URL:
        with _local_lock:
            _local_counts[(name, field)] += 1
        return
    try:
        _redis().hincrby(_hash_key(name), field, 1)
    except redis.RedisError as error:
        logger.warning("metrics store unavailable: %s", type(error).__name__)


def _counter_values(name: str) -> dict[str, float]:
    if not settings.REDIS_URL:
        with _local_lock:
            return {field: float(count) for (counter, field), count in _local_counts.items() if counter == name}
    raw: dict[bytes, bytes] = _redis().hgetall(_hash_key(name))  # type: ignore[assignment]
    return {field.decode(): float(value) for field, value in raw.items()}


class PlatformCollector:
    """Reads every figure at scrape time."""

    def collect(self) -> Iterator[Metric]:
        yield from self._counters()
        yield self._installations()
        yield self._deliveries()
        yield from self._job_durations()
        yield self._queue_lengths()

    def _counters(self) -> Iterator[Metric]:
        for name, (documentation, label_names) in COUNTERS.items():
            family = CounterMetricFamily(name, documentation, labels=label_names)
            for field, value in _counter_values(name).items():
                labels = json.loads(field)
                family.add_metric([labels.get(label, "") for label in label_names], value)
            yield family

    def _installations(self) -> Metric:
        from installations.models import Installation

        family = GaugeMetricFamily("platform_installations", "Installations by status", labels=["status"])
        counts = dict(Installation.objects.values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
        for status in Installation.Status.values:
            family.add_metric([status], counts.get(status, 0))
        return family

    def _deliveries(self) -> Metric:
        from webhooks.models import WebhookDelivery

        family = GaugeMetricFamily(
            "webhook_deliveries", "Webhook deliveries in the log by event and status", labels=["event", "status"]
        )
        rows = WebhookDelivery.objects.values("event", "status").annotate(n=Count("pk")).order_by()
        for row in rows:
            family.add_metric([row["event"] or "(none)", row["status"]], row["n"])
        return family

    def _job_durations(self) -> Iterator[Metric]:
        from sync.models import SyncJob

        duration = ExpressionWrapper(F("finished_at") - F("created_at"), output_field=DurationField())
        rows = (
            SyncJob.objects.filter(finished_at__isnull=False)
            .values("resource", "mode", "status")
            .annotate(n=Count("pk"), total=Sum(duration))
            .order_by()
        )
        total = GaugeMetricFamily(
            "sync_job_duration_seconds_sum", "Seconds finished sync jobs took", labels=["resource", "mode", "status"]
        )
        count = GaugeMetricFamily(
            "sync_job_duration_seconds_count", "Finished sync jobs", labels=["resource", "mode", "status"]
        )
        for row in rows:
            labels = [row["resource"], row["mode"], row["status"]]
            total.add_metric(labels, row["total"].total_seconds() if row["total"] else 0.0)
            count.add_metric(labels, row["n"])
        yield total
        yield count

    def _queue_lengths(self) -> Metric:
        family = GaugeMetricFamily("celery_queue_length", "Tasks waiting in each Celery queue", labels=["queue"])
        for queue, length in queue_lengths().items():
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
    """The counter's current values by label set, for tests and the admin dashboard."""
    return _counter_values(name)
