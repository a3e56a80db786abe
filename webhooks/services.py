"""Webhooks: intake into the delivery log, the outbox relay, idempotent processing, and registrations at Shoptet.

Shoptet sends unordered, in parallel, sometimes twice, with no event id, and gives up after three tries. So the
endpoint only stores (one INSERT, no broker, no Shoptet) and answers; the stored row is the outbox that a beat
relay turns into tasks; processing coalesces a burst for one entity into one handler call and skips what was
processed already (same e-shop, event, instance and eventCreated).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import BigIntegerField, BooleanField, Case, ExpressionWrapper, F, Min, Q, QuerySet, Value, When
from django.utils import timezone

from config.database import DATABASE_OUTAGE_ERRORS
from config.sweeps import EVERYTHING, Slice, slice_at
from installations import toggles
from installations.models import Installation
from shoptet_api import tokens
from shoptet_api.client import ShoptetClient, shoptet_time
from shoptet_api.errors import (
    TRANSIENT_ERRORS,
    AddonNotInstalled,
    AddonSuspended,
    Conflict,
    InstallationInactive,
    OAuthError,
    Unprocessable,
)
from webhooks.events import KNOWN_EVENTS, MASS_EVENTS, SYSTEM_EVENTS
from webhooks.handlers import WebhookEvent, batch_scope, flush_batch_scope, registry
from webhooks.intake import Malformed, Notification, idempotency_key, notification_of, parse_created
from webhooks.models import RegistrationDrift, WebhookDelivery, WebhookRegistration

logger = logging.getLogger(__name__)

Status = WebhookDelivery.Status

# Shoptet accepts at most 50 registrations in one POST /api/webhooks.
REGISTRATION_BATCH = 50
MAX_ERROR_LENGTH = 4000

# The relay claims at most this many due deliveries per batch and runs a few batches per beat tick.
RELAY_BATCH = 1000
RELAY_BATCHES = 10
# A claimed delivery whose task never ran (broker flushed, worker lost) is claimed again after this.
ENQUEUE_LEASE = timedelta(minutes=5)
# One processing run per entity at a time. A batch's heartbeat renews the locks it holds, so the lock only
# has to outlive a heartbeat interval: a killed worker's entity is free again this soon.
ENTITY_LOCK_SECONDS = 30
# Batches: the relay hands each e-shop's due deliveries to one task, at most this many per round, and claims
# them for BATCH_LEASE; the running task renews the lease every HEARTBEAT_SECONDS, and a batch whose lease
# lapsed (its worker was killed) is due again and claimed by the next relay tick.
BATCH_SIZE = 500
BATCH_LEASE = timedelta(seconds=30)
HEARTBEAT_SECONDS = 5.0
# Events that go ahead of bulk refreshes: the life cycle, and job:finished, which an import waits for.
PRIORITY_EVENTS = SYSTEM_EVENTS | {"job:finished"}
# A delivery whose entity is being processed right now is looked at again after this.
BUSY_DELAY = timedelta(seconds=3)
# The most deliveries one run covers; a larger burst is finished by the next run (as duplicates, mostly).
MAX_GROUP = 5000
MAX_ATTEMPTS = 8
RETRY_BASE = timedelta(seconds=15)
RETRY_CAP = timedelta(hours=1)
# getAccessToken mints a token (at most 5 live per e-shop, 30 minutes each): probe at most this often.
ADDON_PROBE_INTERVAL = timedelta(minutes=10)
# A notification Shoptet has not tried yet may be on its way to us: leave it to Shoptet this long.
NOTIFICATION_GRACE = timedelta(minutes=5)
NOTIFICATION_HISTORY = timedelta(days=7)
PURGE_BATCH = 5000
# The statuses an addon:* event leaves the installation in when it was applied.
LIFE_CYCLE: dict[str, set[str]] = {
    "addon:suspend": {Installation.Status.SUSPENDED},
    "addon:approve": {Installation.Status.ACTIVE},
    "addon:uninstall": {Installation.Status.UNINSTALLED, Installation.Status.TERMINATED},
    "addon:terminate": {Installation.Status.TERMINATED},
}
# Deliveries whose event this platform has already got (by idempotency key) need no recovery.
HELD_STATUSES = (Status.RECEIVED, Status.PROCESSED, Status.FAILED, Status.IGNORED)


# Decrypted only if a handler calls Shoptet: most deliveries are duplicates or need no API call.
_SECRETS = ("oauth_token", "webhook_signature_key", "previous_webhook_signature_key")


def webhook_url() -> str:
    return f"{settings.PUBLIC_URL}/shoptet/webhooks/"


# ---------------------------------------------------------------------------
# Relay: the delivery table is the outbox
# ---------------------------------------------------------------------------


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


def _in_flight_key(installation_id: int) -> str:
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
    busy = set(cache.get_many([_in_flight_key(pk) for pk in installation_ids]))
    batches: list[Batch] = []
    for installation_id in installation_ids:
        batches.extend(
            claim_installation_batches(
                installation_id=installation_id, size=size, bulk=_in_flight_key(installation_id) not in busy
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
            cache.set(_in_flight_key(installation_id), "1", timeout=int(BATCH_LEASE.total_seconds()))
        batches.append(Batch(installation_id, [pk for pk, _ in rows], lease, priority))
    return batches


def release_batch(batch: Batch) -> None:
    """Its task could not be enqueued: due again at once, and the e-shop free for the next batch."""
    WebhookDelivery.objects.filter(
        pk__in=batch.delivery_ids, status=Status.RECEIVED, next_attempt_at=batch.lease
    ).update(next_attempt_at=timezone.now())
    if not batch.priority:
        cache.delete(_in_flight_key(batch.installation_id))


class Heartbeat:
    """Renews a running batch's lease and the entity locks it holds, from a thread of its own."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.lease = batch.lease
        self.locks: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batch-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            while not self._stop.wait(HEARTBEAT_SECONDS):
                try:
                    self.beat()
                except DATABASE_OUTAGE_ERRORS:
                    logger.warning("batch heartbeat missed installation=%s", self.batch.installation_id)
        finally:
            connection.close()  # this thread's own connection

    def beat(self) -> None:
        renewed = timezone.now() + BATCH_LEASE
        # Only deliveries still under this batch's lease: a retry or a busy entity set a time of its own.
        WebhookDelivery.objects.filter(
            pk__in=self.batch.delivery_ids, status=Status.RECEIVED, next_attempt_at=self.lease
        ).update(next_attempt_at=renewed)
        self.lease = renewed
        if not self.batch.priority:
            cache.touch(_in_flight_key(self.batch.installation_id), int(BATCH_LEASE.total_seconds()))
        for lock in self.locks.copy():  # a copy: the batch adds and removes locks meanwhile
            cache.touch(lock, ENTITY_LOCK_SECONDS)


def process_batch(*, batch: Batch) -> Outcome:
    """Process one e-shop's claimed deliveries: each entity once, however many deliveries name it.

    Each entity's run covers every received delivery of it (duplicates settled in SQL by idempotency key),
    so 1,000 copies of one delivery are one handler call. What the handlers gather (the codes to refresh)
    is stored in one statement per resource before the deliveries are marked processed; what a handler
    gathered for an entity that then failed is stored at the end.
    """
    outcome = Outcome()
    with Heartbeat(batch) as heartbeat, batch_scope() as deferred:
        if batch.priority:
            _process_one_by_one(batch.delivery_ids, heartbeat.locks, outcome)
        else:
            _process_bulk(batch, heartbeat.locks, outcome)
        deferred.run()
    if not batch.priority:
        cache.delete(_in_flight_key(batch.installation_id))
    return outcome


def _process_one_by_one(delivery_ids: list[int], held_locks: dict[str, str], outcome: Outcome) -> None:
    """Life-cycle events and unsigned deliveries: each entity on its own, in the order received."""
    for leader in _entity_leaders(delivery_ids):
        _merge(outcome, process_delivery(delivery_id=leader, held_locks=held_locks))


def _process_bulk(batch: Batch, held_locks: dict[str, str], outcome: Outcome) -> None:
    """Order, invoice and other entity events: each entity's handlers once, the bookkeeping set-based.

    One query reads the batch and one finds what was processed before (duplicates); the handlers note
    their work in the batch scope (one refresh request per code, in one statement), which runs before one
    UPDATE marks the deliveries processed. A worker killed in between leaves them received, and the next
    run calls the handlers again, which they allow.
    """
    installation = Installation.objects.defer(*_SECRETS).filter(pk=batch.installation_id).first()
    if installation is None:
        return
    rows = list(
        WebhookDelivery.objects.filter(pk__in=batch.delivery_ids, status=Status.RECEIVED)
        .order_by("pk")
        .values_list(
            "pk", "event", "event_instance", "signature_valid", "idempotency_key", "event_created", "replay_requested"
        )
    )
    singles = [pk for pk, event, _, signed, *_ in rows if signed is False or event in PRIORITY_EVENTS]
    if singles:
        _process_one_by_one(singles, held_locks, outcome)
    if installation.status == Installation.Status.SUSPENDED:
        return  # held: the relay skips them until addon:approve resumes the e-shop
    entities: dict[tuple[str, str], list[Row]] = {}
    for pk, event, instance, signed, key, created, replay in rows:
        if signed is not False and event not in PRIORITY_EVENTS:
            entities.setdefault((event, instance), []).append((pk, key, created, replay))
    locks = _lock_entities(installation, list(entities), held_locks)
    try:
        _process_entities(installation, {entity: entities[entity] for entity in locks}, outcome)
    finally:
        _unlock_entities(locks, held_locks)


def _lock_entities(
    installation: Installation, entities: list[tuple[str, str]], held_locks: dict[str, str]
) -> dict[tuple[str, str], str]:
    """Take each entity's processing lock; entities another run holds are due again after BUSY_DELAY."""
    owner = f"{random.getrandbits(64):016x}"
    locks: dict[tuple[str, str], str] = {}
    busy: list[tuple[str, str]] = []
    for event, instance in entities:
        lock = _entity_lock(installation, event, instance, signature_valid=True)
        if cache.add(lock, owner, timeout=ENTITY_LOCK_SECONDS):
            locks[(event, instance)] = lock
            held_locks[lock] = owner
        else:
            busy.append((event, instance))
    for event, instance in busy:
        WebhookDelivery.objects.filter(installation=installation, event=event, status=Status.RECEIVED).with_instance(
            instance
        ).exclude(signature_valid=False).update(next_attempt_at=timezone.now() + BUSY_DELAY)
    return locks


def _unlock_entities(locks: dict[tuple[str, str], str], held_locks: dict[str, str]) -> None:
    owners = {lock: held_locks.pop(lock, None) for lock in locks.values()}
    current = cache.get_many(list(owners))
    cache.delete_many([lock for lock, owner in owners.items() if owner is not None and current.get(lock) == owner])


def _process_entities(installation: Installation, entities: dict[tuple[str, str], list[Row]], outcome: Outcome) -> None:
    fresh, duplicates = _split_duplicates(installation, [row for rows in entities.values() for row in rows])
    _mark_duplicates(duplicates, outcome)
    if not fresh:
        return
    if not installation.is_active:
        fresh_ids = [pk for pk, _, _, _ in fresh]
        _mark(fresh_ids, Status.IGNORED, f"The e-shop is {installation.status}: stored, not processed.")
        outcome.ignored.extend(fresh_ids)
        return
    fresh_pks = {pk for pk, _, _, _ in fresh}
    done: list[Row] = []
    for (event, instance), rows in entities.items():
        entity_fresh = [row for row in rows if row[0] in fresh_pks]
        if entity_fresh and _run_handlers(installation, event, instance, True, entity_fresh, outcome):
            done.extend(entity_fresh)
    if done:
        _mark_processed(done, outcome)
    logger.info(
        "webhook batch processed eshop_id=%s deliveries=%s entities=%s duplicates=%s",
        installation.eshop_id,
        len(done),
        len(entities),
        len(outcome.duplicates),
    )


def _entity_leaders(delivery_ids: list[int]) -> list[int]:
    """The first received delivery of each entity (e-shop, event, instance, trust) in the batch, in order."""
    rows = (
        WebhookDelivery.objects.filter(pk__in=delivery_ids, status=Status.RECEIVED)
        .annotate(unverified=ExpressionWrapper(Q(signature_valid=False), output_field=BooleanField()))
        .values("event", "event_instance", "unverified")
        .annotate(leader=Min("pk"))
        .order_by("leader")
    )
    return [int(row["leader"]) for row in rows]


def _merge(total: Outcome, part: Outcome) -> None:
    for name in ("processed", "duplicates", "retrying", "failed", "rejected", "ignored"):
        getattr(total, name).extend(getattr(part, name))
    total.handler_calls += part.handler_calls


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


# ---------------------------------------------------------------------------
# Processing
# ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one processing run did, by delivery id."""

    processed: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    retrying: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    ignored: list[int] = field(default_factory=list)
    handler_calls: int = 0


class Unconfirmed(Exception):
    """An unsigned system event that getAccessToken does not confirm."""


def process_delivery(*, delivery_id: int, held_locks: dict[str, str] | None = None) -> Outcome:
    """Process a received delivery together with every other received one for the same entity. Safe to repeat."""
    outcome = Outcome()
    delivery = (
        WebhookDelivery.objects.select_related("installation")
        .defer("body", *(f"installation__{name}" for name in _SECRETS))
        .filter(pk=delivery_id)
        .first()
    )
    if delivery is None or delivery.status != Status.RECEIVED or delivery.installation is None:
        return outcome
    installation = delivery.installation
    system_event = delivery.event in SYSTEM_EVENTS
    if installation.status == Installation.Status.SUSPENDED and not system_event:
        return outcome  # held: the relay skips it until addon:approve resumes the e-shop
    lock = _entity_lock(installation, delivery.event, delivery.event_instance, delivery.signature_valid)
    owner = f"{random.getrandbits(64):016x}"
    if not cache.add(lock, owner, timeout=ENTITY_LOCK_SECONDS):
        WebhookDelivery.objects.filter(pk=delivery.pk, status=Status.RECEIVED).update(
            next_attempt_at=timezone.now() + BUSY_DELAY
        )
        return outcome
    if held_locks is not None:
        held_locks[lock] = owner
    try:
        _process_entity(delivery, installation, outcome)
    finally:
        if held_locks is not None:
            held_locks.pop(lock, None)
        if cache.get(lock) == owner:
            cache.delete(lock)
    return outcome


def _entity_lock(installation: Installation, event: str, instance: str, signature_valid: bool | None) -> str:
    trusted = "unverified" if signature_valid is False else "trusted"
    digest = hashlib.sha1(f"{event}\n{instance}\n{trusted}".encode()).hexdigest()  # noqa: S324
    return f"webhooks:{installation.eshop_id}:entity:{digest}"


def _process_entity(delivery: WebhookDelivery, installation: Installation, outcome: Outcome) -> None:
    group = WebhookDelivery.objects.filter(
        installation=installation, event=delivery.event, status=Status.RECEIVED
    ).with_instance(delivery.event_instance)
    group = (
        group.filter(signature_valid=False)
        if delivery.signature_valid is False
        else group.exclude(signature_valid=False)
    )
    rows = list(
        group.order_by("pk").values_list("pk", "idempotency_key", "event_created", "replay_requested")[:MAX_GROUP]
    )
    if not rows:
        return
    fresh, duplicates = _split_duplicates(installation, rows)
    _mark_duplicates(duplicates, outcome)
    if not fresh:
        return
    fresh_ids = [pk for pk, _, _, _ in fresh]
    if delivery.event not in SYSTEM_EVENTS and not installation.is_active:
        _mark(fresh_ids, Status.IGNORED, f"The e-shop is {installation.status}: stored, not processed.")
        outcome.ignored.extend(fresh_ids)
        return
    if _run_handlers(installation, delivery.event, delivery.event_instance, delivery.signature_valid, fresh, outcome):
        _mark_processed(fresh, outcome)
        logger.info(
            "webhook processed eshop_id=%s event=%s deliveries=%s duplicates=%s",
            installation.eshop_id,
            delivery.event,
            len(fresh),
            len(outcome.duplicates),
        )


def _run_handlers(
    installation: Installation,
    event_name: str,
    instance: str,
    signature_valid: bool | None,
    fresh: list[Row],
    outcome: Outcome,
) -> bool:
    """Run the event's handlers once for the entity's fresh deliveries; True when they are done with them.

    Otherwise the deliveries were marked (rejected, ignored, failed), scheduled for a retry or left as
    they are (postponed, held while suspended), and the outcome says which.
    """
    fresh_ids = [pk for pk, _, _, _ in fresh]
    try:
        if signature_valid is False:
            _confirm_by_probe(installation, event_name, fresh_ids)
        event = WebhookEvent(
            installation=installation,
            event=event_name,
            instance=instance,
            codes=expand_codes(event_name, instance),
            created=max(created for _, _, created, _ in fresh if created is not None),
            delivery_ids=tuple(fresh_ids),
        )
        for handler in registry.handlers_for(event_name):
            outcome.handler_calls += 1
            handler(event)
            if event_name in LIFE_CYCLE and installation.status not in LIFE_CYCLE[event_name]:
                # The life-cycle handler (always first) did not apply it (stale, or not from this state):
                # an addon's own reaction, say a catch-up after approve, must not run either.
                break
    except _Postponed:
        return False
    except Unconfirmed as error:
        _mark(fresh_ids, Status.REJECTED, str(error))
        outcome.rejected.extend(fresh_ids)
        return False
    except InstallationInactive as error:
        installation.refresh_from_db(fields=["status"])
        if installation.status == Installation.Status.SUSPENDED:
            # Held until approve; resume_deliveries makes them due again.
            WebhookDelivery.objects.filter(pk__in=fresh_ids).update(error=str(error)[:MAX_ERROR_LENGTH])
        else:
            _mark(fresh_ids, Status.IGNORED, str(error))
            outcome.ignored.extend(fresh_ids)
        return False
    except TRANSIENT_ERRORS as error:
        if _retry_later(fresh_ids, error):
            outcome.retrying.extend(fresh_ids)
        else:
            outcome.failed.extend(fresh_ids)
        return False
    except DATABASE_OUTAGE_ERRORS:
        raise  # not the handler's fault: the task runs the whole group again once the database is back
    except Exception as error:
        logger.exception("webhook handler failed eshop_id=%s event=%s", installation.eshop_id, event_name)
        _mark(fresh_ids, Status.FAILED, f"{type(error).__name__}: {error}", attempt=True)
        outcome.failed.extend(fresh_ids)
        return False
    return True


def _mark_duplicates(duplicates: dict[int, list[int]], outcome: Outcome) -> None:
    """Deliveries of events processed before, in one UPDATE: each points at the first delivery of its event."""
    if not duplicates:
        return
    pks = [pk for copies in duplicates.values() for pk in copies]
    WebhookDelivery.objects.filter(pk__in=pks, status=Status.RECEIVED).update(
        status=Status.PROCESSED,
        duplicate_of_id=_pointing_at(duplicates),
        processed_at=timezone.now(),
        next_attempt_at=None,
        error="",
    )
    outcome.duplicates.extend(pks)


def _pointing_at(copies: dict[int, list[int]]) -> Case:
    """The `duplicate_of` of each copy, for one UPDATE of them all: the first delivery of its event."""
    return Case(
        *(When(pk__in=pks, then=Value(first)) for first, pks in copies.items()),
        output_field=BigIntegerField(),
    )


def _mark_processed(fresh: list[Row], outcome: Outcome) -> None:
    # What the handlers gathered (refresh requests) is stored first: a worker killed in between leaves the
    # deliveries received, and their handlers run again.
    flush_batch_scope()
    fresh_ids = [pk for pk, _, _, _ in fresh]
    WebhookDelivery.objects.filter(pk__in=fresh_ids, status=Status.RECEIVED).update(
        status=Status.PROCESSED,
        attempts=F("attempts") + 1,
        processed_at=timezone.now(),
        next_attempt_at=None,
        error="",
        replay_requested=False,
    )
    # Copies of one event in the same burst were covered by this call; the log points them at the first.
    copies = _copies(fresh)
    if copies:
        WebhookDelivery.objects.filter(pk__in=[pk for pks in copies.values() for pk in pks]).update(
            duplicate_of_id=_pointing_at(copies)
        )
    outcome.processed.extend(fresh_ids)


Row = tuple[int, str, datetime | None, bool]


def _split_duplicates(installation: Installation, rows: list[Row]) -> tuple[list[Row], dict[int, list[int]]]:
    """Deliveries of an event processed before (same idempotency key) are duplicates, unless replayed."""
    keys = {key for _, key, _, _ in rows}
    done: dict[str, int] = {}
    for key, pk in (
        WebhookDelivery.objects.filter(installation=installation, idempotency_key__in=keys, status=Status.PROCESSED)
        .order_by("pk")
        .values_list("idempotency_key", "pk")
    ):
        done.setdefault(key, pk)
    fresh = []
    duplicates: dict[int, list[int]] = {}
    for row in rows:
        pk, key, _, replay = row
        if key in done and not replay:
            duplicates.setdefault(done[key], []).append(pk)
        else:
            fresh.append(row)
    return fresh, duplicates


def _copies(rows: list[Row]) -> dict[int, list[int]]:
    """Among rows of one run: later copies of an event (same idempotency key) by the first one's id."""
    first: dict[str, int] = {}
    copies: dict[int, list[int]] = {}
    for pk, key, _, replay in rows:
        if key in first and not replay:
            copies.setdefault(first[key], []).append(pk)
        else:
            first.setdefault(key, pk)
    return copies


def expand_codes(event: str, instance: str) -> tuple[str, ...]:
    """Mass events carry a JSON list of codes in eventInstance; every other event names one entity."""
    if event not in MASS_EVENTS:
        return (instance,)
    try:
        codes = json.loads(instance)
    except ValueError as error:
        raise ValueError(f"eventInstance of {event} is not a JSON list of codes") from error
    if not isinstance(codes, list) or not all(
        isinstance(code, str | int) and not isinstance(code, bool) for code in codes
    ):
        raise ValueError(f"eventInstance of {event} is not a JSON list of codes")
    return tuple(dict.fromkeys(str(code) for code in codes))


class _Postponed(Exception):
    """Nothing to record now: the deliveries stay received and come back later."""


def _confirm_by_probe(installation: Installation, event: str, delivery_ids: list[int]) -> None:
    """An unsigned addon:* event counts only when getAccessToken reports the state it claims."""
    if not cache.add(
        f"webhooks:{installation.eshop_id}:addon-probe", "1", timeout=int(ADDON_PROBE_INTERVAL.total_seconds())
    ):
        WebhookDelivery.objects.filter(pk__in=delivery_ids).update(
            next_attempt_at=timezone.now() + ADDON_PROBE_INTERVAL
        )
        raise _Postponed
    state = probe_addon_state(installation)
    expected = {
        "addon:suspend": Installation.Status.SUSPENDED,
        "addon:approve": Installation.Status.ACTIVE,
        "addon:uninstall": Installation.Status.UNINSTALLED,
        "addon:terminate": Installation.Status.UNINSTALLED,
    }[event]
    if state != expected:
        raise Unconfirmed(f"Unsigned {event} not confirmed: getAccessToken reports the add-on as {state}.")


def probe_addon_state(installation: Installation) -> str:
    """Ask getAccessToken: `active`, `suspended` or `uninstalled` (a revoked OAuth token counts as uninstalled)."""
    try:
        tokens.mint_access_token(installation)
    except AddonSuspended:
        return Installation.Status.SUSPENDED
    except AddonNotInstalled:
        return Installation.Status.UNINSTALLED
    except OAuthError as error:
        if error.error == "invalid_token":
            return Installation.Status.UNINSTALLED
        raise
    return Installation.Status.ACTIVE


def _retry_later(delivery_ids: list[int], error: Exception) -> bool:
    """Record a transient failure; True when another attempt is scheduled, False when attempts are used up."""
    text = f"{type(error).__name__}: {error}"[:MAX_ERROR_LENGTH]
    attempts = (
        max(WebhookDelivery.objects.filter(pk__in=delivery_ids).values_list("attempts", flat=True), default=0) + 1
    )
    if attempts >= MAX_ATTEMPTS:
        _mark(delivery_ids, Status.FAILED, text, attempt=True)
        return False
    ceiling = min(RETRY_CAP.total_seconds(), RETRY_BASE.total_seconds() * 2 ** (attempts - 1))
    pause = timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311 - jitter
    WebhookDelivery.objects.filter(pk__in=delivery_ids, status=Status.RECEIVED).update(
        attempts=F("attempts") + 1, error=text, next_attempt_at=timezone.now() + pause
    )
    logger.warning(
        "webhook retry scheduled deliveries=%s in=%.0fs error=%s", len(delivery_ids), pause.total_seconds(), text
    )
    return True


def _mark(delivery_ids: list[int], status: str, error: str, *, attempt: bool = False) -> None:
    changes: dict[str, Any] = {"status": status, "error": error[:MAX_ERROR_LENGTH], "next_attempt_at": None}
    if attempt:
        changes["attempts"] = F("attempts") + 1
    WebhookDelivery.objects.filter(pk__in=delivery_ids, status=Status.RECEIVED).update(**changes)


# ---------------------------------------------------------------------------
# Staff: replay, purge
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Recovery from Shoptet's notification log
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Registrations at Shoptet
# ---------------------------------------------------------------------------


@dataclass
class RegistrationResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def register_webhooks(*, installation: Installation, client: ShoptetClient) -> RegistrationResult:
    """Make Shoptet's registrations for the configured events point at us; change nothing that is right."""
    return _apply_registrations(installation, client, _by_event(client.list_webhooks()))


def reconcile_webhooks(*, installation: Installation, client: ShoptetClient | None = None) -> RegistrationDrift | None:
    """Compare Shoptet's registrations with the wanted ones, repair them and record any drift."""
    if not installation.is_active:
        return None
    client = client or ShoptetClient(installation)
    url = webhook_url()
    current = client.list_webhooks()
    existing = _by_event(current)
    wanted = toggles.wanted_events(installation, settings.SHOPTET_WEBHOOK_EVENTS)
    strays = [
        webhook
        for webhook in current
        if str(webhook.get("event")) not in wanted
        and str(webhook.get("url") or "").startswith(f"{settings.PUBLIC_URL}/")
    ]
    drift = RegistrationDrift(
        installation=installation,
        missing=[event for event in wanted if event not in existing],
        wrong_url=[event for event in wanted if event in existing and existing[event].get("url") != url],
        strays=[{"id": w.get("id"), "event": w.get("event"), "url": w.get("url")} for w in strays],
    )
    if not (drift.missing or drift.wrong_url or drift.strays):
        _mirror(installation, {event: existing[event] for event in wanted if event in existing})
        return None
    drift.save()
    logger.warning(
        "webhook registrations drifted eshop_id=%s missing=%s wrong_url=%s strays=%s",
        installation.eshop_id,
        drift.missing,
        drift.wrong_url,
        [w["event"] for w in drift.strays],
    )
    try:
        for webhook in strays:
            client.delete_webhook(int(webhook["id"]))
            existing.pop(str(webhook.get("event")), None)
        _apply_registrations(installation, client, existing)
    except Exception as error:
        drift.error = f"{type(error).__name__}: {error}"[:MAX_ERROR_LENGTH]
        drift.save(update_fields=["error"])
        raise
    drift.repaired = True
    drift.save(update_fields=["repaired"])
    return drift


def watched_installations() -> QuerySet[Installation]:
    """Active, onboarded installations: the ones whose registrations and notifications are checked."""
    return Installation.objects.filter(
        status=Installation.Status.ACTIVE, onboarding_status=Installation.Onboarding.DONE
    )


def installations_to_watch(*, share: Slice = EVERYTHING) -> list[int]:
    """The watched installations in `share` (one beat tick's slice of a sweep), by pk."""
    return list(share.of(watched_installations()).order_by("pk").values_list("pk", flat=True))


def watch_slice(period: timedelta, *, moment: datetime | None = None) -> Slice:
    """The slice of the watched installations that a sweep of `period` checks at `moment` (now)."""
    return slice_at(period, population=watched_installations().count(), moment=moment)


def _apply_registrations(
    installation: Installation, client: ShoptetClient, existing: dict[str, dict[str, Any]]
) -> RegistrationResult:
    url = webhook_url()
    result = RegistrationResult()
    wanted = toggles.wanted_events(installation, settings.SHOPTET_WEBHOOK_EVENTS)
    for event in wanted:
        current = existing.get(event)
        if current is None:
            continue
        if current.get("url") == url:
            result.unchanged.append(event)
        else:
            existing[event] = client.update_webhook(int(current["id"]), url=url) or {**current, "url": url}
            result.updated.append(event)
    missing = [event for event in wanted if event not in existing]
    for start in range(0, len(missing), REGISTRATION_BATCH):
        batch = missing[start : start + REGISTRATION_BATCH]
        existing.update(_create(client, batch, url))
        result.created.extend(batch)
    _mirror(installation, {event: existing[event] for event in wanted if event in existing})
    logger.info(
        "webhooks registered eshop_id=%s created=%s updated=%s unchanged=%s",
        installation.eshop_id,
        len(result.created),
        len(result.updated),
        len(result.unchanged),
    )
    return result


def _create(client: ShoptetClient, events: list[str], url: str) -> dict[str, dict[str, Any]]:
    try:
        created = client.create_webhooks([{"event": event, "url": url} for event in events])
    except (Conflict, Unprocessable):
        # Another run registered some of them meanwhile (Shoptet answers 422, or 409 by some accounts):
        # read the truth back and fix whatever is still missing or wrong one by one.
        return _create_one_by_one(client, events, url)
    return _by_event(created)


def _create_one_by_one(client: ShoptetClient, events: list[str], url: str) -> dict[str, dict[str, Any]]:
    registered = _by_event(client.list_webhooks())
    for event in events:
        current = registered.get(event)
        if current is None:
            registered.update(_by_event(client.create_webhooks([{"event": event, "url": url}])))
        elif current.get("url") != url:
            registered[event] = client.update_webhook(int(current["id"]), url=url) or {**current, "url": url}
    return {event: registered[event] for event in events if event in registered}


def _by_event(webhooks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(webhook["event"]): webhook for webhook in webhooks if webhook.get("event")}


@transaction.atomic
def _mirror(installation: Installation, registered: dict[str, dict[str, Any]]) -> None:
    """Record locally what Shoptet confirmed, so staff and the API see it without asking Shoptet."""
    installation.webhook_registrations.exclude(event__in=registered).delete()
    for event, webhook in registered.items():
        WebhookRegistration.objects.update_or_create(
            installation=installation,
            event=event,
            defaults={"shoptet_id": int(webhook["id"]), "url": str(webhook.get("url") or "")},
        )
