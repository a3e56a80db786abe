"""Notification e-mails: recorded where the event happens, sent by a Celery task, at most one per kind,
e-shop and day.

The callers (onboarding, the life cycle, sync jobs, the daily silence check) only write a pending row in
their own transaction; a beat relay enqueues the sending, as the platform does with onboarding and
webhook processing, so a broker that is down loses no mail and an event never waits on SMTP.
"""

from __future__ import annotations

import logging
import smtplib
from datetime import date, datetime, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone, translation

from installations.models import AddonSettings, Installation
from notifications import messages
from notifications.models import Notification, RecipientLanguage
from sync.models import SyncCursor, SyncJob

logger = logging.getLogger(__name__)

Kind = Notification.Kind
Status = Notification.Status

# What sending a mail may raise: the SMTP server's answers, and a server that is down or too slow.
# ValueError: an address Django's mail framework cannot put in a header.
DELIVERY_ERRORS: tuple[type[Exception], ...] = (smtplib.SMTPException, OSError, ValueError)
# A /changes run that fails is retried by a new run within minutes; only a run of failures is worth a mail.
CHANGES_FAILURES_BEFORE_MAIL = 3
# Webhooks missing this long while the e-shop was active are worth a mail.
SILENCE = timedelta(days=1)
SILENCE_BATCH = 500
RELAY_BATCH = 100
SETTINGS_PATH = "/addon/settings/"
DEFAULT_LANGUAGE = "en"


# ---------------------------------------------------------------------------
# Recording: where the events happen
# ---------------------------------------------------------------------------


def notify(*, installation: Installation, kind: str, at: datetime | None = None) -> Notification | None:
    """Record a mail of `kind` for the e-shop; None when no address is set or one went out today already.

    The unique (installation, kind, day) row is the cap: two workers recording the same event at once
    make one row, whichever commits first.
    """
    address = notification_address(installation=installation)
    if not address:
        logger.info("notification skipped eshop_id=%s kind=%s reason=no address", installation.eshop_id, kind)
        return None
    day = local_day(installation=installation, moment=at or timezone.now())
    try:
        with transaction.atomic():
            notification = Notification.objects.create(installation=installation, kind=kind, day=day)
    except IntegrityError:
        logger.info("notification capped eshop_id=%s kind=%s day=%s", installation.eshop_id, kind, day)
        return None
    logger.info("notification recorded eshop_id=%s kind=%s id=%s", installation.eshop_id, kind, notification.pk)
    return notification


def notify_sync_failure(*, job: SyncJob) -> Notification | None:
    """A sync job failed for good. A `/changes` run is retried by a new one: only repeated failures count."""
    installation = job.installation
    if not installation.is_active:
        return None  # suspended or gone: that has its own mail, or none
    if job.mode == SyncJob.Mode.CHANGES:
        cursor = SyncCursor.objects.filter(installation=installation, resource=job.resource).first()
        if cursor is None or cursor.failures < CHANGES_FAILURES_BEFORE_MAIL:
            return None
    return notify(installation=installation, kind=Kind.SYNC_FAILED)


def notify_onboarding_failure(*, installation: Installation) -> Notification | None:
    return notify(installation=installation, kind=Kind.ONBOARDING_FAILED)


def notify_status_change(*, installation: Installation, status: str) -> Notification | None:
    """The addon was suspended, or resumed after a suspension; other changes send nothing."""
    kinds = {Installation.Status.SUSPENDED: Kind.SUSPENDED, Installation.Status.ACTIVE: Kind.RESUMED}
    kind = kinds.get(Installation.Status(status))
    return notify(installation=installation, kind=kind) if kind else None


def remember_language(*, installation: Installation, language: str) -> None:
    """The admin who saves the settings page (and so the address) reads the mails in their language."""
    RecipientLanguage.objects.update_or_create(installation=installation, defaults={"language": language_of(language)})


def notify_silent_webhooks(*, now: datetime | None = None, batch_size: int = SILENCE_BATCH) -> int:
    """Daily: a mail to every e-shop active all day from which no webhook came for more than SILENCE.

    Walks the installations in primary-key batches, so a fleet of any size costs bounded queries and memory.
    Returns how many mails were recorded.
    """
    moment = now or timezone.now()
    cutoff = moment - SILENCE
    silent = (
        Installation.objects.filter(
            status=Installation.Status.ACTIVE,
            onboarding_status=Installation.Onboarding.DONE,
            onboarded_at__lt=cutoff,
            status_changed_at__lt=cutoff,
        )
        .annotate(heard_at=Coalesce("last_webhook_at", "onboarded_at"))
        .filter(heard_at__lt=cutoff)
        .exclude(addon_settings__notification_email="")
        .filter(addon_settings__isnull=False)
        .order_by("pk")
    )
    recorded, after = 0, 0
    while True:
        batch = list(silent.filter(pk__gt=after).only("pk", "eshop_id", "timezone")[:batch_size])
        if not batch:
            return recorded
        days = {installation.pk: local_day(installation=installation, moment=moment) for installation in batch}
        mailed = set(
            Notification.objects.filter(
                kind=Kind.WEBHOOKS_SILENT, installation_id__in=days, day__in=set(days.values())
            ).values_list("installation_id", "day")
        )
        rows = [
            Notification(installation_id=pk, kind=Kind.WEBHOOKS_SILENT, day=day)
            for pk, day in days.items()
            if (pk, day) not in mailed
        ]
        # One statement per batch; a row another run wrote meanwhile is left as it is (the unique cap).
        Notification.objects.bulk_create(rows, ignore_conflicts=True)
        recorded += len(rows)
        after = batch[-1].pk


# ---------------------------------------------------------------------------
# Sending: the relay and the task
# ---------------------------------------------------------------------------


@transaction.atomic
def claim_pending(*, stale_after: timedelta, limit: int = RELAY_BATCH) -> list[int]:
    """Pending mails not enqueued yet, or enqueued so long ago that their task was lost."""
    now = timezone.now()
    pending = (
        Notification.objects.select_for_update(skip_locked=True)
        .filter(status=Status.PENDING)
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=now - stale_after))
        .order_by("pk")
    )
    pks = list(pending.values_list("pk", flat=True)[:limit])
    Notification.objects.filter(pk__in=pks).update(enqueued_at=now)
    return pks


def send_notification(*, notification_id: int) -> Notification:
    """Send one pending mail; a no-op when it was sent, failed or is being sent by another worker.

    Raises one of DELIVERY_ERRORS when the SMTP server refuses it or cannot be reached; the row stays pending.
    """
    with transaction.atomic():
        notification = (
            Notification.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("installation")
            .filter(pk=notification_id, status=Status.PENDING)
            .first()
        )
        if notification is None:
            return Notification.objects.get(pk=notification_id)
        installation = notification.installation
        address = notification_address(installation=installation)
        if not address:
            # The address was removed after the event: nobody to tell.
            return _finish(notification, Status.SKIPPED, error="no notification address set")
        language = recipient_language(installation=installation)
        notification.recipient, notification.language = address, language
        with translation.override(language):
            subject, body = messages.compose(
                kind=notification.kind,
                eshop=installation.name or installation.eshop_url or str(installation.eshop_id),
                link=settings_link(installation=installation, language=language),
            )
        EmailMessage(subject=subject, body=body, to=[address]).send()
        notification.attempts += 1
        _finish(notification, Status.SENT)
    logger.info(
        "notification sent eshop_id=%s kind=%s id=%s", installation.eshop_id, notification.kind, notification.pk
    )
    return notification


def record_failure(*, notification_id: int, error: Exception, final: bool) -> Notification:
    """Count a failed attempt; `final` marks the mail failed (no more retries)."""
    with transaction.atomic():
        notification = Notification.objects.select_for_update().select_related("installation").get(pk=notification_id)
        if notification.status != Status.PENDING:
            return notification
        notification.attempts += 1
        notification.recipient = notification.recipient or notification_address(installation=notification.installation)
        notification.error = f"{type(error).__name__}: {error}"[:1000]
        if final:
            _finish(notification, Status.FAILED, error=notification.error)
        else:
            notification.save(update_fields=["attempts", "recipient", "error"])
    log = logger.error if final else logger.warning
    log(
        "notification %s eshop_id=%s kind=%s id=%s attempts=%s error=%s",
        "failed" if final else "not sent yet",
        notification.installation.eshop_id,
        notification.kind,
        notification.pk,
        notification.attempts,
        notification.error,
    )
    return notification


def is_permanent(error: Exception) -> bool:
    """An error no retry can mend: every recipient refused with a 5xx answer, or an address no header holds."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in error.recipients.values())
    return isinstance(error, ValueError)


def _finish(notification: Notification, status: str, *, error: str = "") -> Notification:
    notification.status = status
    notification.error = error
    notification.finished_at = timezone.now()
    notification.save(update_fields=["status", "error", "finished_at", "recipient", "language", "attempts"])
    return notification


# ---------------------------------------------------------------------------
# One e-shop's address, language, day and link
# ---------------------------------------------------------------------------


def notification_address(*, installation: Installation) -> str:
    stored = AddonSettings.objects.filter(installation=installation).values_list("notification_email", flat=True)
    return (stored.first() or "").strip()


def language_of(value: str | None) -> str:
    """One of the settings page's languages (settings.LANGUAGES: Shoptet's en, cs, sk, hu); else English."""
    code = (value or "").strip().lower()
    return code if code in {code for code, _ in settings.LANGUAGES} else DEFAULT_LANGUAGE


def recipient_language(*, installation: Installation) -> str:
    stored = RecipientLanguage.objects.filter(installation=installation).values_list("language", flat=True).first()
    return language_of(stored) if stored else DEFAULT_LANGUAGE


def local_day(*, installation: Installation, moment: datetime) -> date:
    """The e-shop's calendar day at `moment` (its Shoptet time zone; UTC when unknown)."""
    try:
        zone = ZoneInfo(installation.timezone) if installation.timezone else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return moment.astimezone(zone).date()


def settings_link(*, installation: Installation, language: str) -> str:
    """The addon settings page as Shoptet's addon settings URL opens it, without the code Shoptet adds.

    Opened from a mail, the page sends the admin through their e-shop's OAuth sign-in (the admin is
    usually signed in to Shoptet's administration already) and back: the link holds no session or secret.
    """
    query = urlencode({"eshopId": installation.eshop_id, "language": language})
    return f"{settings.PUBLIC_URL}{SETTINGS_PATH}?{query}"
