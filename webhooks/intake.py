"""Webhook intake: one call of the endpoint validated, verified and stored as a delivery row, and the answer.

Shoptet sends unordered, in parallel, sometimes twice, with no event id, and gives up after three tries, so the
endpoint only stores and answers: one INSERT, no broker, no Shoptet. The INSERT is a statement prepared once
per connection, and it skips Django's per-request connection check (a broken connection fails the INSERT
itself, which then runs once more on a new one). The e-shop's keys and status are kept per process for a few
seconds. A 200 still means the row is committed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cache
from operator import attrgetter
from typing import Any

import psycopg
from django.conf import settings
from django.db import connection, models
from django.utils import timezone

from config.database import DATABASE_OUTAGE_ERRORS
from installations.models import Installation
from shoptet_api.ids import InvalidEshopId, parse_eshop_id
from webhooks import rejections, signature
from webhooks.events import KNOWN_EVENTS, SYSTEM_EVENTS
from webhooks.models import WebhookDelivery

Status = WebhookDelivery.Status

# Headers worth keeping with a delivery (the rest is noise or a proxy's business).
KEPT_HEADERS = (
    "Content-Type",
    "Content-Length",
    "User-Agent",
    signature.HEADER,
    "X-Forwarded-For",
    "X-Real-Ip",
    "X-Request-Id",
)
MAX_HEADER_LENGTH = 512
EVENT_NAME = re.compile(r"[a-z][A-Za-z]*:[a-z][A-Za-z]*")


@dataclass(frozen=True)
class Intake:
    """The stored delivery (None when the caller was over its rejection limit) and what the sender gets back."""

    delivery: WebhookDelivery | None
    http_status: int
    message: str = ""
    retry_after: int = 0


@dataclass(frozen=True)
class Notification:
    """The four fields of Shoptet's webhook body, validated."""

    eshop_id: int
    event: str
    instance: str
    created: datetime


class Malformed(ValueError):
    """The body is not a Shoptet notification."""


def record_delivery(*, body: bytes | None, headers: Mapping[str, str], remote_addr: str | None) -> Intake:
    """Store one call of the webhook endpoint and decide the answer; `body` is None when it was too large."""
    delivery = WebhookDelivery(
        headers=_kept_headers(headers),
        source_ip=_ip_or_none(remote_addr),
        body=body or b"",
        body_length=None if body is None else len(body),
        body_sha256="" if body is None else hashlib.sha256(body).hexdigest(),
        signature_valid=False,
    )
    if body is None:
        limit = settings.WEBHOOK_MAX_BODY_BYTES
        return _finish(delivery, Status.REJECTED, 413, f"The body is larger than {limit} bytes.", reason="too_large")
    try:
        notification = parse_notification(body)
    except Malformed as error:
        _keep_what_parsed(delivery, body)
        return _finish(delivery, Status.REJECTED, 400, str(error), reason="malformed")
    delivery.eshop_id = notification.eshop_id
    delivery.event = notification.event
    delivery.event_instance = notification.instance
    delivery.event_created = notification.created
    signer = _signer(notification.eshop_id)
    if signer is None:
        return _finish(delivery, Status.REJECTED, 404, "No installation for this e-shop.", reason="unknown_eshop")
    # The key is the e-shop's, so the body had to be parsed to find it; the raw bytes are what is verified.
    sent = headers.get(signature.HEADER, "")
    delivery.signature_valid = signer.verifies(body, sent)
    if not delivery.signature_valid and signer.cached:
        signer = _signer(notification.eshop_id, reload=True)  # the key may have been renewed meanwhile
        if signer is None:
            return _finish(delivery, Status.REJECTED, 404, "No installation for this e-shop.", reason="unknown_eshop")
        delivery.signature_valid = signer.verifies(body, sent)
    delivery.installation_id = signer.installation_id
    delivery.idempotency_key = idempotency_key(notification)
    if not _within_replay_window(notification.created):
        return _finish(
            delivery,
            Status.REJECTED,
            400 if delivery.signature_valid else 401,
            "eventCreated is outside the accepted window.",
            reason="outside_window",
        )
    if not delivery.signature_valid:
        if notification.event in SYSTEM_EVENTS:
            # Not trusted, not dropped: processing asks getAccessToken and acts only on what it confirms.
            return _finish(delivery, Status.RECEIVED, 200, "Unsigned system event: the state will be probed.")
        return _finish(
            delivery, Status.REJECTED, 401, "Missing or invalid Shoptet-Webhook-Signature.", reason="bad_signature"
        )
    if notification.event not in KNOWN_EVENTS:
        return _finish(delivery, Status.IGNORED, 200, "Unknown event.")
    if signer.status in (Installation.Status.UNINSTALLED, Installation.Status.TERMINATED) and (
        notification.event not in SYSTEM_EVENTS
    ):
        return _finish(delivery, Status.IGNORED, 200, f"The e-shop is {signer.status}: stored, not processed.")
    return _finish(delivery, Status.RECEIVED, 200)


def _finish(delivery: WebhookDelivery, status: str, http_status: int, message: str = "", *, reason: str = "") -> Intake:
    if status == Status.REJECTED:
        verdict = rejections.admit_rejection(delivery.source_ip, reason)
        if not verdict.allowed:
            return Intake(
                delivery=None,
                http_status=429,
                message="Too many rejected deliveries from this address; retry later.",
                retry_after=verdict.retry_after,
            )
    delivery.status = status
    if status == Status.RECEIVED:
        delivery.next_attempt_at = delivery.received_at
    else:
        delivery.error = message
        _bound(delivery)
    store(delivery)
    return Intake(delivery=delivery, http_status=http_status, message=message)


def _bound(delivery: WebhookDelivery) -> None:
    """A delivery that will not be processed keeps a prefix of what anyone may have sent, not all of it."""
    limit = settings.WEBHOOK_REJECTED_BODY_PREFIX
    delivery.body = rejections.body_prefix(bytes(delivery.body), limit)
    delivery.body_truncated = delivery.body_length is None or len(delivery.body) < delivery.body_length
    delivery.event_instance = delivery.event_instance[:limit]


def parse_notification(body: bytes) -> Notification:
    """Validate `{"eshopId", "event", "eventCreated", "eventInstance"}`; raise Malformed with the reason."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise Malformed("The body is not JSON.") from error
    if not isinstance(data, dict):
        raise Malformed("The body is not a JSON object.")
    return notification_of(data)


def notification_of(data: dict[str, Any]) -> Notification:
    """The notification in a decoded body, or in an item of Shoptet's notification log; raise Malformed."""
    missing = [name for name in ("eshopId", "event", "eventCreated", "eventInstance") if name not in data]
    if missing:
        raise Malformed(f"Missing fields: {', '.join(missing)}.")
    return Notification(
        eshop_id=_eshop_id(data["eshopId"]),
        event=_event(data["event"]),
        instance=_instance(data["eventInstance"]),
        created=parse_created(data["eventCreated"]),
    )


def _eshop_id(value: Any) -> int:
    try:
        return parse_eshop_id(value)
    except InvalidEshopId as error:
        raise Malformed("eshopId is not an e-shop id.") from error


def _event(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 64 or not EVENT_NAME.fullmatch(value):
        raise Malformed("event is not an event name.")
    return value


def _instance(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not _storable(value):
        raise Malformed("eventInstance is neither a string nor a number.")
    return value


def parse_created(value: Any) -> datetime:
    """A date-time with its offset, as Shoptet sends `eventCreated`; raise Malformed."""
    if not isinstance(value, str) or len(value) > 64:
        raise Malformed("eventCreated is not a date-time.")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as error:
        raise Malformed("eventCreated is not a date-time.") from error
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise Malformed("eventCreated has no time zone offset.")
    return moment


def _storable(text: str) -> bool:
    """PostgreSQL text takes neither NUL nor lone surrogates (which JSON escapes can produce)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clean(text: str, limit: int) -> str:
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")[:limit]


def _keep_what_parsed(delivery: WebhookDelivery, body: bytes) -> None:
    """For a rejected body, keep the recognisable fields so staff can find it."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return
    if not isinstance(data, dict):
        return
    try:
        delivery.eshop_id = _eshop_id(data.get("eshopId"))
    except Malformed:
        pass
    if isinstance(data.get("event"), str):
        delivery.event = _clean(data["event"], 64)
    instance = data.get("eventInstance")
    if isinstance(instance, str | int) and not isinstance(instance, bool):
        delivery.event_instance = _clean(str(instance), 10_000)


def _kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    kept = {}
    for name in KEPT_HEADERS:
        value = headers.get(name)
        if value:
            kept[name] = _clean(str(value), MAX_HEADER_LENGTH)
    return kept


def _ip_or_none(value: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(value or ""))
    except ValueError:
        return None


@dataclass(frozen=True)
class Signer:
    """What the endpoint needs to know of an e-shop: its installation, status and accepted keys."""

    installation_id: int
    status: str
    keys: tuple[str, ...]
    loaded_at: float
    cached: bool = False

    def verifies(self, body: bytes, sent: str) -> bool:
        try:
            signature.verify_any(body, sent, list(self.keys))
        except signature.InvalidSignature:
            return False
        return True


# The endpoint's one read per delivery, kept per process for a few seconds: at Shoptet's bursts it is a
# third of the work. A stale entry cannot do harm: a signature that fails is checked again against the
# database (a renewed key), an ended e-shop is always read afresh, and processing checks the status again.
SIGNER_SECONDS = 10.0
MAX_SIGNERS = 10_000
_signers: dict[int, Signer] = {}


def _signer(eshop_id: int, *, reload: bool = False) -> Signer | None:
    cached = _signers.get(eshop_id)
    if (
        cached is not None
        and not reload
        and time.monotonic() - cached.loaded_at < SIGNER_SECONDS
        and cached.status in (Installation.Status.ACTIVE, Installation.Status.SUSPENDED)
    ):
        return replace(cached, cached=True)
    installation = (
        Installation.objects.only(
            "pk", "status", "webhook_signature_key", "previous_webhook_signature_key", "signature_key_renewed_at"
        )
        .filter(eshop_id=eshop_id)
        .first()
    )
    if installation is None:
        _signers.pop(eshop_id, None)
        return None
    signer = Signer(installation.pk, installation.status, tuple(accepted_keys(installation)), time.monotonic())
    if len(_signers) >= MAX_SIGNERS:
        _signers.clear()
    _signers[eshop_id] = signer
    return signer


def forget_signers() -> None:
    """Drop this process's kept e-shop keys and statuses (tests change them under its feet)."""
    _signers.clear()


def accepted_keys(installation: Installation) -> list[str]:
    """The current key, and the previous one until a grace window after the renewal has passed."""
    keys = [installation.webhook_signature_key]
    renewed = installation.signature_key_renewed_at
    if installation.previous_webhook_signature_key and (
        renewed is None or timezone.now() - renewed <= settings.WEBHOOK_SIGNATURE_GRACE
    ):
        keys.append(installation.previous_webhook_signature_key)
    return [key for key in keys if key]


def _within_replay_window(created: datetime) -> bool:
    now = timezone.now()
    return now - settings.WEBHOOK_REPLAY_WINDOW_PAST <= created <= now + settings.WEBHOOK_REPLAY_WINDOW_FUTURE


def idempotency_key(notification: Notification) -> str:
    """Shoptet sends no event id: the same e-shop, event, instance and creation time are the same event."""
    created = notification.created.astimezone(UTC).isoformat()
    raw = "\n".join([str(notification.eshop_id), notification.event, notification.instance, created])
    return hashlib.sha256(raw.encode()).hexdigest()


# ---------------------------------------------------------------------------
# The INSERT
# ---------------------------------------------------------------------------

_STORED_FIELDS = [field for field in WebhookDelivery._meta.concrete_fields if not field.primary_key]
# Fields whose value the driver needs adapted (JSON, inet, bytea) or that fill themselves in on save; every
# other field's attribute is already the value save() would send, and reading it is a tenth of the cost.
_ADAPTED_FIELDS = (models.JSONField, models.GenericIPAddressField, models.BinaryField)


def _column_reader(field: models.Field[Any, Any]) -> Callable[[WebhookDelivery], Any]:
    if isinstance(field, _ADAPTED_FIELDS) or getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return lambda delivery: field.get_db_prep_save(field.pre_save(delivery, add=True), connection)
    return attrgetter(field.attname)


_COLUMN_READERS = [_column_reader(field) for field in _STORED_FIELDS]


@cache
def _insert_statement() -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(field.column)) for field in _STORED_FIELDS)
    values = ", ".join(["%s"] * len(_STORED_FIELDS))
    table, pk = quote(WebhookDelivery._meta.db_table), quote(str(WebhookDelivery._meta.pk.column))
    return f"INSERT INTO {table} ({columns}) VALUES ({values}) RETURNING {pk}"  # noqa: S608 - the model's names


def store(delivery: WebhookDelivery) -> None:
    """INSERT the row as `save()` would, without the ORM's per-call compiling: the endpoint's one statement.

    Outside a transaction, a connection found broken by the INSERT (the database restarted since the last
    request) is replaced and the INSERT sent once more; a row stored twice is only a duplicate delivery,
    which processing skips. Inside a transaction the error goes up to whoever opened it.
    """
    if connection.vendor != "postgresql":
        delivery.save(force_insert=True)  # embedded mode (SQLite): no prepared statements, no kept connection
        return
    values = [read(delivery) for read in _COLUMN_READERS]
    for attempt in (1, 2):
        if attempt == 1 and not connection.in_atomic_block:
            # Django would send `SELECT 1` first on a kept connection; the INSERT finds a broken one as well.
            connection.health_check_done = True  # type: ignore[attr-defined]
        try:
            delivery.pk = _insert(values)
        except DATABASE_OUTAGE_ERRORS:
            if attempt == 2 or connection.in_atomic_block:
                raise
            connection.close()
            continue
        delivery._state.adding = False
        delivery._state.db = connection.alias
        return


def _insert(values: list[Any]) -> int:
    connection.ensure_connection()
    with connection.wrap_database_errors:
        # Django's own cursors bind on the client and cannot prepare; this one is prepared once per connection.
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(_insert_statement(), values, prepare=True)
            row = cursor.fetchone()
    assert row is not None  # noqa: S101 - INSERT … RETURNING returns its row
    return int(row[0])
