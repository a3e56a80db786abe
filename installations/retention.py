"""How long an ended tenant's data stays: TENANT_DATA_RETENTION after its uninstall or termination.

The mirror holds the e-shop's customers (names, e-mails, addresses, phones inside orders and invoices).
Once the period is over its documents, items, webhook deliveries, refresh requests, sync jobs and cursors
are deleted in bounded batches, and the OAuth token and webhook signature keys are cleared. The
installation row keeps its identity and history (status changes, settings changes, the admin log), so a
later reinstall is recognised and starts with a full import.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from installations.models import Installation
from sync.models import Invoice, InvoiceItem, Order, OrderItem, RefreshRequest, SyncCursor, SyncJob
from webhooks.models import WebhookDelivery

logger = logging.getLogger(__name__)

ENDED = (Installation.Status.UNINSTALLED, Installation.Status.TERMINATED)


@dataclass
class PurgeOutcome:
    """Rows deleted per table for one installation."""

    deleted: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


def ended_at(installation: Installation) -> datetime | None:
    """When the tenant ended: its uninstall, or its termination when it was never uninstalled."""
    if installation.status not in ENDED:
        return None
    return installation.uninstalled_at or installation.terminated_at


def purge_due_at(installation: Installation, *, retention: timedelta | None = None) -> datetime | None:
    """When the ended tenant's data is (or was) deleted; None while it is active or data is kept for ever."""
    period = settings.TENANT_DATA_RETENTION if retention is None else retention
    end = ended_at(installation)
    if end is None or not period:
        return None
    return end + period


def due_installations(*, now: datetime | None = None) -> models.QuerySet[Installation]:
    """Ended installations whose period is over; empty when TENANT_DATA_RETENTION keeps data for ever."""
    period = settings.TENANT_DATA_RETENTION
    if not period:
        return Installation.objects.none()
    cutoff = (now or timezone.now()) - period
    return (
        Installation.objects.defer("oauth_token", "webhook_signature_key", "previous_webhook_signature_key")
        .filter(status__in=ENDED)
        .annotate(ended=Coalesce("uninstalled_at", "terminated_at"))
        .filter(ended__lte=cutoff)
        .order_by("pk")
    )


def _tenant_tables(installation: Installation) -> list[tuple[str, models.QuerySet[models.Model]]]:
    """Every row of the tenant that is deleted, children before their parents."""
    deliveries = WebhookDelivery.objects.filter(
        Q(installation=installation) | Q(installation__isnull=True, eshop_id=installation.eshop_id)
    )
    return [
        ("order items", OrderItem.objects.filter(installation=installation)),
        ("invoice items", InvoiceItem.objects.filter(installation=installation)),
        ("orders", Order.objects.filter(installation=installation)),
        ("invoices", Invoice.objects.filter(installation=installation)),
        ("refresh requests", RefreshRequest.objects.filter(installation=installation)),
        ("sync cursors", SyncCursor.objects.filter(installation=installation)),
        ("sync jobs", SyncJob.objects.filter(installation=installation)),
        ("webhook deliveries", deliveries),
    ]


def _delete_in_batches(rows: models.QuerySet[models.Model], batch: int) -> int:
    """Delete `rows` a batch of primary keys at a time, each batch in its own short transaction."""
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(rows.order_by("pk").values_list("pk", flat=True)[:batch])
            if not ids:
                return deleted
            rows.model._default_manager.filter(pk__in=ids).delete()
        deleted += len(ids)


def purge_tenant_data(*, installation: Installation, batch: int | None = None) -> PurgeOutcome:
    """Delete one tenant's mirrored data and clear its secrets; nobody else's row is touched."""
    size = batch or settings.TENANT_DATA_PURGE_BATCH
    outcome = PurgeOutcome()
    for name, rows in _tenant_tables(installation):
        outcome.deleted[name] = _delete_in_batches(rows, size)
    clear_secrets(installation=installation)
    logger.info("tenant data purged eshop_id=%s rows=%s", installation.eshop_id, outcome.total)
    return outcome


def clear_secrets(*, installation: Installation) -> None:
    """The OAuth token and signature keys of an ended tenant are of no use and must not outlive its data."""
    # Empty values, not passwords: bandit's B106 mistakes the field names for credentials being set.
    Installation.objects.filter(pk=installation.pk).update(  # nosec B106
        oauth_token="",
        webhook_signature_key="",
        previous_webhook_signature_key="",
        signature_key_renewed_at=None,
        updated_at=timezone.now(),
    )


def purge_due(*, now: datetime | None = None) -> int:
    """The daily run: purge every ended tenant whose period is over; returns the rows deleted."""
    total = 0
    for installation in due_installations(now=now).iterator():
        # A reinstall since the listing keeps the data.
        installation.refresh_from_db(fields=["status"])
        if installation.status not in ENDED:
            continue
        total += purge_tenant_data(installation=installation).total
    return total
