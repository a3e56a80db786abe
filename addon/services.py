"""What the addon settings page shows and does for one installation: every query here is scoped to it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from addon.auth import Admin
from installations.models import AddonSettings, Installation, SettingsChange
from notifications import services as notifications
from sync import jobs as sync_jobs
from sync import toggles as sync_toggles
from sync.models import Invoice, Order, SyncCursor, SyncJob
from webhooks.models import WebhookDelivery

logger = logging.getLogger(__name__)

RESOURCES = (SyncJob.Resource.ORDERS, SyncJob.Resource.INVOICES)
MODES = (SyncJob.Mode.CHANGES, SyncJob.Mode.SNAPSHOT)
SETTINGS_FIELDS = ("sync_orders", "sync_invoices", "import_since", "notification_email")
RECENT_DELIVERIES = 50
RECENT_JOBS = 10
HISTORY_LENGTH = 20
# Failed deliveries older than this are history, not a problem to show.
PROBLEM_WINDOW = timedelta(hours=24)


EVENT_LABELS: dict[str, Promise] = {
    "order:create": gettext_lazy("Order created"),
    "order:update": gettext_lazy("Order changed"),
    "order:delete": gettext_lazy("Order deleted"),
    "order:paid": gettext_lazy("Order paid"),
    "order:cancel": gettext_lazy("Order cancelled"),
    "invoice:create": gettext_lazy("Invoice created"),
    "invoice:update": gettext_lazy("Invoice changed"),
    "invoice:delete": gettext_lazy("Invoice deleted"),
    "eshop:projectDomain": gettext_lazy("E-shop address changed"),
    "job:finished": gettext_lazy("Export finished"),
    "addon:approve": gettext_lazy("Addon resumed"),
    "addon:suspend": gettext_lazy("Addon suspended"),
    "addon:terminate": gettext_lazy("Addon terminated"),
    "addon:uninstall": gettext_lazy("Addon uninstalled"),
}
DELIVERY_STATUS_LABELS: dict[str, Promise] = {
    WebhookDelivery.Status.RECEIVED: gettext_lazy("Waiting"),
    WebhookDelivery.Status.PROCESSED: gettext_lazy("Processed"),
    WebhookDelivery.Status.FAILED: gettext_lazy("Failed"),
    WebhookDelivery.Status.REJECTED: gettext_lazy("Rejected"),
    WebhookDelivery.Status.IGNORED: gettext_lazy("Ignored"),
}


class ResyncRefused(Exception):
    """The resync cannot start; the message is for the admin."""


@dataclass(frozen=True)
class ResourceStatus:
    resource: str
    enabled: bool
    count: int
    last_success: SyncJob | None
    running: SyncJob | None
    last_failure: SyncJob | None
    # Set while `/changes` runs fail: when the last one did, and when it is retried.
    changes_failure: SyncCursor | None = None


@dataclass(frozen=True)
class Problem:
    """Something the admin should know, in plain words, with the technical detail for support."""

    message: str
    detail: str = ""


@dataclass(frozen=True)
class DeliveryRow:
    """One webhook delivery as the admin reads it."""

    received_at: datetime
    event: str
    event_label: str
    instance: str
    status: str
    status_label: str
    error: str


@dataclass(frozen=True)
class Overview:
    installation: Installation
    settings: AddonSettings
    resources: list[ResourceStatus]
    jobs: list[SyncJob]
    last_webhook_at: datetime | None
    failed_deliveries: int
    problems: list[Problem]

    @property
    def in_progress(self) -> bool:
        return any(status.running for status in self.resources)


# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------


def settings_of(*, installation: Installation) -> AddonSettings:
    """The installation's settings; the defaults, not yet stored, until an admin first saves them."""
    stored = AddonSettings.objects.filter(installation=installation).first()
    return stored or AddonSettings(installation=installation)


def update_settings(*, installation: Installation, admin: Admin, values: dict[str, Any]) -> list[SettingsChange]:
    """Store the admin's values; one change row per value that differs. Returns the changes."""
    with transaction.atomic():
        AddonSettings.objects.get_or_create(installation=installation)
        row = AddonSettings.objects.select_for_update().get(installation=installation)
        changes = []
        for field in SETTINGS_FIELDS:
            old, new = getattr(row, field), values.get(field, getattr(row, field))
            if _stored(old) == _stored(new):
                continue
            setattr(row, field, new)
            changes.append(
                SettingsChange(
                    installation=installation,
                    field=field,
                    old_value=_stored(old),
                    new_value=_stored(new),
                    admin_email=admin.email,
                    admin_name=admin.name,
                )
            )
        if changes:
            row.updated_by = admin.email
            row.save()
            SettingsChange.objects.bulk_create(changes)
            sync_toggles.react_to_settings(installation=installation, changes=changes)
        notifications.remember_language(installation=installation, language=admin.language)
    if changes:
        logger.info(
            # The admin's e-mail is personal data: it stays in the settings changes, never in a log line.
            "addon settings changed eshop_id=%s fields=%s",
            installation.eshop_id,
            ",".join(change.field for change in changes),
        )
    return changes


def settings_history(*, installation: Installation, limit: int = HISTORY_LENGTH) -> list[SettingsChange]:
    return list(SettingsChange.objects.filter(installation=installation).order_by("-created_at", "-id")[:limit])


def _stored(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


# ---------------------------------------------------------------------------
# Overview
# ---------------------------------------------------------------------------


def overview(*, installation: Installation) -> Overview:
    """Status, per-resource sync state, recent jobs and what needs attention."""
    settings_row = settings_of(installation=installation)
    resources = [_resource_status(installation, settings_row, resource) for resource in RESOURCES]
    since = timezone.now() - PROBLEM_WINDOW
    failed_deliveries = WebhookDelivery.objects.filter(
        installation=installation, status=WebhookDelivery.Status.FAILED, received_at__gte=since
    ).count()
    return Overview(
        installation=installation,
        settings=settings_row,
        resources=resources,
        jobs=recent_jobs(installation=installation),
        last_webhook_at=last_delivery_at(installation=installation),
        failed_deliveries=failed_deliveries,
        problems=_problems(installation, resources, failed_deliveries),
    )


def recent_jobs(*, installation: Installation, limit: int = RECENT_JOBS) -> list[SyncJob]:
    return list(SyncJob.objects.filter(installation=installation).order_by("-created_at", "-id")[:limit])


def recent_deliveries(*, installation: Installation, limit: int = RECENT_DELIVERIES) -> list[DeliveryRow]:
    deliveries = (
        WebhookDelivery.objects.filter(installation=installation)
        .only("received_at", "event", "event_instance", "status", "error")
        .order_by("-received_at", "-id")[:limit]
    )
    return [
        DeliveryRow(
            received_at=delivery.received_at,
            event=delivery.event,
            event_label=str(EVENT_LABELS.get(delivery.event, delivery.event or "?")),
            instance=delivery.event_instance,
            status=delivery.status,
            status_label=str(DELIVERY_STATUS_LABELS.get(delivery.status, delivery.status)),
            error=delivery.error,
        )
        for delivery in deliveries
    ]


def last_delivery_at(*, installation: Installation) -> datetime | None:
    """When Shoptet last notified this e-shop's installation; rejected calls (bad signature) do not count."""
    accepted = WebhookDelivery.objects.filter(installation=installation).exclude(status=WebhookDelivery.Status.REJECTED)
    newest: datetime | None = accepted.aggregate(newest=Max("received_at"))["newest"]
    stamps = [moment for moment in (newest, installation.last_webhook_at) if moment is not None]
    return max(stamps) if stamps else None


def _resource_status(installation: Installation, settings_row: AddonSettings, resource: str) -> ResourceStatus:
    jobs = SyncJob.objects.filter(installation=installation, resource=resource)
    last_success = jobs.filter(status=SyncJob.Status.COMPLETED).order_by("-finished_at", "-id").first()
    running = jobs.filter(status__in=SyncJob.UNFINISHED).order_by("-created_at", "-id").first()
    failures = jobs.filter(status=SyncJob.Status.FAILED)
    if last_success is not None:
        failures = failures.filter(created_at__gt=last_success.created_at)
    documents = Order if resource == SyncJob.Resource.ORDERS else Invoice
    return ResourceStatus(
        resource=resource,
        enabled=settings_row.syncs(resource),
        count=documents.objects.filter(installation=installation, deleted_at__isnull=True).count(),
        last_success=last_success,
        running=running,
        last_failure=failures.order_by("-created_at", "-id").first(),
        changes_failure=SyncCursor.objects.filter(installation=installation, resource=resource, failures__gt=0).first(),
    )


def _problems(installation: Installation, resources: list[ResourceStatus], failed_deliveries: int) -> list[Problem]:
    problems = []
    if installation.onboarding_status == Installation.Onboarding.FAILED:
        problems.append(
            Problem(
                _("Connecting to your e-shop failed. We try again automatically; if this stays, contact us."),
                installation.onboarding_error,
            )
        )
    elif installation.onboarding_status == Installation.Onboarding.PENDING:
        problems.append(Problem(_("The connection to your e-shop is still being set up. This takes a minute.")))
    for status in resources:
        if status.changes_failure is not None:
            message = {
                SyncJob.Resource.ORDERS: _(
                    "Fetching changes of orders from Shoptet failed. We try again automatically."
                ),
                SyncJob.Resource.INVOICES: _(
                    "Fetching changes of invoices from Shoptet failed. We try again automatically."
                ),
            }[SyncJob.Resource(status.resource)]
            problems.append(Problem(message, status.changes_failure.error))
        if status.last_failure is not None and not _retried(status):
            message = {
                SyncJob.Resource.ORDERS: _("The last import of orders failed. Start it again below."),
                SyncJob.Resource.INVOICES: _("The last import of invoices failed. Start it again below."),
            }[SyncJob.Resource(status.resource)]
            problems.append(Problem(message, status.last_failure.error))
    if failed_deliveries:
        problems.append(
            Problem(
                ngettext(
                    "%(count)s notification from Shoptet in the last 24 hours could not be processed. "
                    "A full resync brings the data up to date.",
                    "%(count)s notifications from Shoptet in the last 24 hours could not be processed. "
                    "A full resync brings the data up to date.",
                    failed_deliveries,
                )
                % {"count": failed_deliveries}
            )
        )
    return problems


def _retried(status: ResourceStatus) -> bool:
    """The last failure is a `/changes` run that is retried automatically: nothing for the admin to start."""
    return (
        status.changes_failure is not None
        and status.last_failure is not None
        and (status.last_failure.mode == SyncJob.Mode.CHANGES)
    )


# ---------------------------------------------------------------------------
# Resync
# ---------------------------------------------------------------------------


def start_resync(*, installation: Installation, admin: Admin, resource: str, mode: str) -> SyncJob:
    """Start the same sync job as `POST /api/v1/installations/{eshop_id}/sync/`; the caller enqueues it."""
    if resource not in RESOURCES or mode not in MODES:
        raise ResyncRefused(_("Choose orders or invoices, and changes or a full snapshot."))
    if not settings_of(installation=installation).syncs(resource):
        raise ResyncRefused(_("This resource is switched off in the settings. Switch it on first."))
    try:
        job = sync_jobs.request_sync(
            installation=installation, resource=resource, mode=mode, cause=f"settings page: {admin.email}"
        )
    except sync_jobs.SyncRunning as running:
        raise ResyncRefused(_("This sync is already running. Wait until it finishes.")) from running
    except sync_jobs.SyncError as error:
        raise ResyncRefused(_("The sync cannot start now. Try again later.")) from error
    logger.info(
        "resync requested eshop_id=%s resource=%s mode=%s job=%s",
        installation.eshop_id,
        resource,
        mode,
        job.pk,
    )
    return job
