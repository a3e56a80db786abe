"""Processing: each entity of a claimed batch once, under its lock, duplicates skipped, failures retried.

Shoptet sends unordered, in parallel, sometimes twice, with no event id. A run coalesces a burst for one
entity into one handler call and skips what was processed already (same e-shop, event, instance and
eventCreated); unsigned life-cycle events count only when getAccessToken confirms them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db import connection
from django.db.models import BigIntegerField, BooleanField, Case, ExpressionWrapper, F, Min, Q, Value, When
from django.utils import timezone

from config.database import DATABASE_OUTAGE_ERRORS
from config.retries import Backoff
from installations.models import Installation
from shoptet_api import tokens
from shoptet_api.errors import TRANSIENT_ERRORS, AddonNotInstalled, AddonSuspended, InstallationInactive, OAuthError
from webhooks.events import MASS_EVENTS, SYSTEM_EVENTS
from webhooks.models import MAX_ERROR_LENGTH, WebhookDelivery
from webhooks.outbox import BATCH_LEASE, PRIORITY_EVENTS, Batch, in_flight_key
from webhooks.registry import WebhookEvent, batch_scope, flush_batch_scope, registry

logger = logging.getLogger(__name__)

Status = WebhookDelivery.Status

# One processing run per entity at a time. A batch's heartbeat renews the locks it holds, so the lock only
# has to outlive a heartbeat interval: a killed worker's entity is free again this soon.
ENTITY_LOCK_SECONDS = 30
# A running batch renews its lease (outbox.BATCH_LEASE) and entity locks this often.
HEARTBEAT_SECONDS = 5.0
# A delivery whose entity is being processed right now is looked at again after this.
BUSY_DELAY = timedelta(seconds=3)
# The most deliveries one run covers; a larger burst is finished by the next run (as duplicates, mostly).
MAX_GROUP = 5000
MAX_ATTEMPTS = 8
DELIVERY_RETRY = Backoff(base=15.0, cap=3600.0)
# getAccessToken mints a token (at most 5 live per e-shop, 30 minutes each): probe at most this often.
ADDON_PROBE_INTERVAL = timedelta(minutes=10)
# The statuses an addon:* event leaves the installation in when it was applied.
LIFE_CYCLE: dict[str, set[str]] = {
    "addon:suspend": {Installation.Status.SUSPENDED},
    "addon:approve": {Installation.Status.ACTIVE},
    "addon:uninstall": {Installation.Status.UNINSTALLED, Installation.Status.TERMINATED},
    "addon:terminate": {Installation.Status.TERMINATED},
}
# Decrypted only if a handler calls Shoptet: most deliveries are duplicates or need no API call.
_SECRETS = ("oauth_token", "webhook_signature_key", "previous_webhook_signature_key")


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
            cache.touch(in_flight_key(self.batch.installation_id), int(BATCH_LEASE.total_seconds()))
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
        cache.delete(in_flight_key(batch.installation_id))
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
    pause = DELIVERY_RETRY.delay(attempts - 1)
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
