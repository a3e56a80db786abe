"""The outbox relay: due deliveries claimed in batches per e-shop, released, resumed and queued again (replay).

The delivery table is the outbox: the endpoint only stores a row, and a beat relay turns due rows into tasks.
SKIP LOCKED lets several relays (or a relay and the workers) run side by side; a claim is a lease.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models import Min, Q, QuerySet
from django.utils import timezone

from installations.models import Installation
from webhooks.events import SYSTEM_EVENTS
from webhooks.models import WebhookDelivery

Status = WebhookDelivery.Status

# The relay claims at most this many due deliveries per batch and runs a few batches per beat tick.
RELAY_BATCH = 1000
RELAY_BATCHES = 10
# A claimed delivery whose task never ran (broker flushed, worker lost) is claimed again after this.
ENQUEUE_LEASE = timedelta(minutes=5)
# Batches: the relay hands each e-shop's due deliveries to one task, at most this many per round, and claims
# them for BATCH_LEASE; the running task renews the lease every HEARTBEAT_SECONDS, and a batch whose lease
# lapsed (its worker was killed) is due again and claimed by the next relay tick.
BATCH_SIZE = 500
BATCH_LEASE = timedelta(seconds=30)
# Events that go ahead of bulk refreshes: the life cycle, and job:finished, which an import waits for.
PRIORITY_EVENTS = SYSTEM_EVENTS | {"job:finished"}


def claim_due_deliveries(*, limit: int = RELAY_BATCH) -> list[int]:
    """Claim received deliveries that are due and return one delivery id per entity, to be enqueued.

    SKIP LOCKED lets several relays (or a relay and the workers) run side by side. Deliveries of a suspended
    e-shop wait (its addon:* events do not). A claim is a lease: a task that never runs is claimed again.
    """
    now = timezone.now()
    with transaction.atomic():
        due = list(
            WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(status=Status.RECEIVED, next_attempt_at__lte=now)
            .filter(Q(event__startswith="addon:") | ~Q(installation__status=Installation.Status.SUSPENDED))
            .order_by("next_attempt_at", "pk")
            .values_list("pk", "installation_id", "event", "event_instance", "signature_valid", "received_at")[:limit]
        )
        if not due:
            return []
        WebhookDelivery.objects.filter(pk__in=[row[0] for row in due]).update(next_attempt_at=now + ENQUEUE_LEASE)
        latest: dict[int, datetime] = {}
        for _, installation_id, _, _, _, received_at in due:
            latest[installation_id] = max(received_at, latest.get(installation_id, received_at))
        for installation_id, received_at in latest.items():
            Installation.objects.filter(pk=installation_id).filter(
                Q(last_webhook_at__isnull=True) | Q(last_webhook_at__lt=received_at)
            ).update(last_webhook_at=received_at)
    leaders: dict[tuple[Any, ...], int] = {}
    for pk, installation_id, event, instance, signature_valid, _ in due:
        leaders.setdefault((installation_id, event, instance, signature_valid is False), pk)
    return list(leaders.values())


@dataclass(frozen=True)
class Batch:
    """Due deliveries of one e-shop claimed for one task until `lease` (the stamp their next_attempt_at holds)."""

    installation_id: int
    delivery_ids: list[int]
    lease: datetime
    priority: bool


def in_flight_key(installation_id: int) -> str:
    return f"webhooks:installation:{installation_id}:batch-in-flight"


def installations_with_due_work(*, now: datetime | None = None) -> list[int]:
    """E-shops with received deliveries due, the longest-waiting first (round-robin over what is due)."""
    now = now or timezone.now()
    rows = (
        WebhookDelivery.objects.filter(status=Status.RECEIVED, next_attempt_at__lte=now, installation__isnull=False)
        .filter(Q(event__startswith="addon:") | ~Q(installation__status=Installation.Status.SUSPENDED))
        .values("installation_id")
        .annotate(oldest=Min("next_attempt_at"))
        .order_by("oldest", "installation_id")
    )
    return [int(row["installation_id"]) for row in rows]


def claim_due_batches(*, size: int = BATCH_SIZE) -> list[Batch]:
    """One round: for each e-shop with work due, at most `size` deliveries claimed as one batch.

    Life-cycle events and job:finished form a batch of their own, sent ahead of the bulk. An e-shop whose
    bulk batch is still in flight gets no second one (its running task claims the next when it ends), so
    a burst never fills the queue ahead of other e-shops and a lease never lapses while its task waits.
    """
    installation_ids = installations_with_due_work()
    if not installation_ids:
        return []
    busy = set(cache.get_many([in_flight_key(pk) for pk in installation_ids]))
    batches: list[Batch] = []
    for installation_id in installation_ids:
        batches.extend(
            claim_installation_batches(
                installation_id=installation_id, size=size, bulk=in_flight_key(installation_id) not in busy
            )
        )
    return batches


def claim_installation_batches(*, installation_id: int, size: int = BATCH_SIZE, bulk: bool = True) -> list[Batch]:
    """Claim one e-shop's due priority deliveries and, when `bulk`, up to `size` others."""
    now = timezone.now()
    lease = now + BATCH_LEASE
    batches = []
    due = WebhookDelivery.objects.filter(
        installation_id=installation_id, status=Status.RECEIVED, next_attempt_at__lte=now
    )
    due = due.filter(Q(event__startswith="addon:") | ~Q(installation__status=Installation.Status.SUSPENDED))
    kinds = [(True, due.filter(event__in=PRIORITY_EVENTS))]
    if bulk:
        kinds.append((False, due.exclude(event__in=PRIORITY_EVENTS)))
    for priority, deliveries in kinds:
        with transaction.atomic():
            rows = list(
                deliveries.select_for_update(skip_locked=True, of=("self",))
                .order_by("next_attempt_at", "pk")
                .values_list("pk", "received_at")[:size]
            )
            if not rows:
                continue
            WebhookDelivery.objects.filter(pk__in=[pk for pk, _ in rows]).update(next_attempt_at=lease)
            latest = max(received_at for _, received_at in rows)
            Installation.objects.filter(pk=installation_id).filter(
                Q(last_webhook_at__isnull=True) | Q(last_webhook_at__lt=latest)
            ).update(last_webhook_at=latest)
        if not priority:
            cache.set(in_flight_key(installation_id), "1", timeout=int(BATCH_LEASE.total_seconds()))
        batches.append(Batch(installation_id, [pk for pk, _ in rows], lease, priority))
    return batches


def release_batch(batch: Batch) -> None:
    """Its task could not be enqueued: due again at once, and the e-shop free for the next batch."""
    WebhookDelivery.objects.filter(
        pk__in=batch.delivery_ids, status=Status.RECEIVED, next_attempt_at=batch.lease
    ).update(next_attempt_at=timezone.now())
    if not batch.priority:
        cache.delete(in_flight_key(batch.installation_id))


def release_deliveries(*, delivery_ids: Iterable[int]) -> None:
    """Make claimed deliveries due again at once (their tasks could not be enqueued)."""
    WebhookDelivery.objects.filter(pk__in=list(delivery_ids), status=Status.RECEIVED).update(
        next_attempt_at=timezone.now()
    )


def resume_deliveries(*, installation: Installation) -> int:
    """After a suspension: everything held for the e-shop is due now."""
    return WebhookDelivery.objects.filter(installation=installation, status=Status.RECEIVED).update(
        next_attempt_at=timezone.now()
    )


def replay_deliveries(*, deliveries: QuerySet[WebhookDelivery]) -> int:
    """Process processed or failed deliveries again, even if their event was processed; rejected ones never."""
    return deliveries.filter(status__in=[Status.PROCESSED, Status.FAILED], installation__isnull=False).update(
        status=Status.RECEIVED,
        replay_requested=True,
        replayed_at=timezone.now(),
        next_attempt_at=timezone.now(),
        attempts=0,
        error="",
        duplicate_of=None,
        processed_at=None,
    )
