"""The platform's admin site: Django's admin with a dashboard at its index.

A fixed handful of queries, whatever the number of tenants, jobs or deliveries; the charts come from the
hourly statistics (rollups), the API call timings from the metrics store (config.metrics).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
from django.contrib import admin
from django.db.models import Count
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from config import metrics
from installations.models import Installation
from rollups import services as rollups
from rollups.dashboard import chart_context
from sync.models import SyncJob
from webhooks.models import WebhookDelivery

logger = logging.getLogger(__name__)

DASHBOARD_WINDOW = timedelta(hours=24)
DASHBOARD_ROWS = 10


@dataclass(frozen=True)
class Tally:
    label: str
    value: int
    url: str


class PlatformAdminSite(admin.AdminSite):
    site_header = "Shoptet addon platform"
    site_title = "Addon platform"
    index_title = "Dashboard"
    index_template = "admin/dashboard.html"

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        return super().index(request, extra_context={**dashboard(), **(extra_context or {})})


def dashboard() -> dict[str, Any]:
    """What the index shows."""
    since = timezone.now() - DASHBOARD_WINDOW
    installations = dict(Installation.objects.values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
    # Settled deliveries from the rollup's hours, the ones still waiting counted now: never a scan of a
    # day of the log, which at 100 webhooks/s is 8.6 million rows.
    deliveries = {status: int(n) for status, n in rollups.hourly_sums(rollups.DELIVERIES, since=since).items()}
    deliveries[WebhookDelivery.Status.RECEIVED] = WebhookDelivery.objects.count_pending(
        up_to=metrics.PENDING_COUNTED_UP_TO
    )
    installation_list = reverse("admin:installations_installation_changelist")
    delivery_list = reverse("admin:webhooks_webhookdelivery_changelist")
    context: dict[str, Any] = {
        "installations_by_status": [
            Tally(label, installations.get(value, 0), f"{installation_list}?status__exact={value}")
            for value, label in Installation.Status.choices
        ],
        "deliveries_by_status": [
            Tally(
                "Waiting now" if value == WebhookDelivery.Status.RECEIVED else label,
                deliveries.get(value, 0),
                f"{delivery_list}?status__exact={value}",
            )
            for value, label in WebhookDelivery.Status.choices
        ],
        "failed_jobs": list(
            SyncJob.objects.filter(status=SyncJob.Status.FAILED, finished_at__gte=since)
            .select_related("installation")
            .order_by("-finished_at", "-id")[:DASHBOARD_ROWS]
        ),
        "running_jobs": list(
            SyncJob.objects.filter(status__in=SyncJob.UNFINISHED)
            .select_related("installation")
            .order_by("created_at", "id")[:DASHBOARD_ROWS]
        ),
        "onboarding_failed": Installation.objects.filter(
            status=Installation.Status.ACTIVE, onboarding_status=Installation.Onboarding.FAILED
        ).count(),
        "window_hours": int(DASHBOARD_WINDOW.total_seconds() // 3600),
        **chart_context(),
    }
    try:
        context["slowest_calls"] = metrics.slowest_api_calls(limit=DASHBOARD_ROWS, within=DASHBOARD_WINDOW)
        context["endpoint_timings"] = metrics.endpoint_timings(limit=DASHBOARD_ROWS)
        context["queue_lengths"] = metrics.queue_lengths()
    except redis.RedisError as error:
        logger.warning("dashboard: metrics store unavailable: %s", type(error).__name__)
        context["metrics_unavailable"] = True
    return context
