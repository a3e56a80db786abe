"""Recovery and retention: notifications Shoptet could not hand over stored as deliveries, old payloads purged.

Shoptet gives up after three tries; its notification log (the last 7 days) holds what it could not deliver.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from installations.models import Installation
from shoptet_api.client import ShoptetClient, shoptet_time
from webhooks.events import KNOWN_EVENTS
from webhooks.intake import Malformed, Notification, idempotency_key, notification_of, parse_created
from webhooks.models import WebhookDelivery

logger = logging.getLogger(__name__)

Status = WebhookDelivery.Status

# A notification Shoptet has not tried yet may be on its way to us: leave it to Shoptet this long.
NOTIFICATION_GRACE = timedelta(minutes=5)
NOTIFICATION_HISTORY = timedelta(days=7)
PURGE_BATCH = 5000
# Deliveries whose event this platform has already got (by idempotency key) need no recovery.
HELD_STATUSES = (Status.RECEIVED, Status.PROCESSED, Status.FAILED, Status.IGNORED)


def recover_notifications(*, installation: Installation, client: ShoptetClient | None = None) -> list[int]:
    """Store, as deliveries, notifications of the last 7 days that Shoptet could not hand over to us."""
    if not installation.is_active:
        return []
    client = client or ShoptetClient(installation)
    now = timezone.now()
    since = shoptet_time(now - NOTIFICATION_HISTORY)
    candidates: list[Notification] = []
    for status in ("failed", "new"):
        # Reference: getListOfWebhookNotifications (GET /api/webhooks/notifications)
        for item in client.paginate(
            "/api/webhooks/notifications",
            key="notifications",
            params={"status": status, "from": since},
            items_per_page=500,
        ):
            notification = _notification_of(item, installation)
            if notification is None:
                continue
            if status == "new" and now - _notification_created(item, notification) < NOTIFICATION_GRACE:
                continue
            candidates.append(notification)
    by_key = {idempotency_key(notification): notification for notification in candidates}
    held = set(
        WebhookDelivery.objects.filter(
            installation=installation, idempotency_key__in=by_key, status__in=HELD_STATUSES
        ).values_list("idempotency_key", flat=True)
    )
    recovered = []
    for key, notification in by_key.items():
        if key in held:
            continue
        body = json.dumps(
            {
                "eshopId": notification.eshop_id,
                "event": notification.event,
                "eventCreated": notification.created.isoformat(),
                "eventInstance": notification.instance,
            }
        ).encode()
        delivery = WebhookDelivery.objects.create(
            installation=installation,
            eshop_id=notification.eshop_id,
            event=notification.event,
            event_instance=notification.instance,
            event_created=notification.created,
            source=WebhookDelivery.Source.NOTIFICATION_LOG,
            body=body,
            signature_valid=None,
            status=Status.RECEIVED,
            next_attempt_at=now,
            idempotency_key=key,
        )
        recovered.append(delivery.pk)
    if recovered:
        logger.warning(
            "webhooks recovered from the notification log eshop_id=%s count=%s", installation.eshop_id, len(recovered)
        )
    return recovered


def _notification_of(item: dict[str, Any], installation: Installation) -> Notification | None:
    data = item.get("data")
    if not isinstance(data, dict):
        return None
    try:
        notification = notification_of(data)
    except Malformed:
        return None
    if notification.eshop_id != installation.eshop_id or notification.event not in KNOWN_EVENTS:
        return None
    return notification


def _notification_created(item: dict[str, Any], notification: Notification) -> datetime:
    try:
        return parse_created(item.get("created"))
    except Malformed:
        return notification.created


def purge_payloads(*, older_than: timedelta, ignored_older_than: timedelta | None = None) -> int:
    """Drop the raw bodies of settled deliveries older than `older_than` (ignored ones: `ignored_older_than`).

    The metadata stays. An ignored body is never processed or replayed, so it need not be kept as long.
    """
    now = timezone.now()
    settled = Q(status__in=[Status.PROCESSED, Status.IGNORED, Status.REJECTED], received_at__lt=now - older_than)
    if ignored_older_than is not None:
        settled |= Q(status=Status.IGNORED, received_at__lt=now - ignored_older_than)
    unpurged = WebhookDelivery.objects.filter(settled, payload_purged_at__isnull=True)
    purged = 0
    while True:
        pks = list(unpurged.order_by("pk").values_list("pk", flat=True)[:PURGE_BATCH])
        if not pks:
            return purged
        purged += WebhookDelivery.objects.filter(pk__in=pks).update(body=b"", payload_purged_at=timezone.now())


def delete_rejected_deliveries(*, older_than: timedelta) -> int:
    """Delete rejected deliveries older than `older_than`: anyone can send them, so they are kept briefly.

    Ignored ones are not deleted: such a row records an event Shoptet did send, which recovery must not
    store again.
    """
    rejected = WebhookDelivery.objects.filter(status=Status.REJECTED, received_at__lt=timezone.now() - older_than)
    deleted = 0
    while True:
        pks = list(rejected.order_by("pk").values_list("pk", flat=True)[:PURGE_BATCH])
        if not pks:
            return deleted
        deleted += WebhookDelivery.objects.filter(pk__in=pks).delete()[0]
