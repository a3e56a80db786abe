"""Tenant workflows: install (inside Shoptet's 5-second window) and onboarding (in Celery, after it)."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from config import metrics
from config.addresses import ip_or_none
from installations.models import Installation, InstallAttempt, StatusChange
from installations.throttle import CACHE_ERRORS
from notifications import services as notifications
from shoptet_api import tokens
from shoptet_api.client import ShoptetClient
from shoptet_api.errors import AddonNotInstalled, AddonSuspended, OAuthError, TransportError
from webhooks import outbox as webhook_outbox
from webhooks import registrations as webhook_registrations

logger = logging.getLogger(__name__)

# Shoptet's codes are "a 255 character long string" of letters and digits. Room for a longer or base64-like
# code is left; anything else (spaces, control characters, quotes, non-ASCII, far longer) is no code of
# theirs and must not cost an exchange with our client secret.
MAX_CODE_LENGTH = 512
CODE_SHAPE = re.compile(r"[A-Za-z0-9._~+/=-]+")


class InstallFailed(Exception):
    """The install callback cannot complete; `http_status` is what Shoptet gets back."""

    def __init__(self, message: str, *, http_status: int) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status


@dataclass(frozen=True)
class InstallOutcome:
    installation: Installation
    reinstalled: bool


# ---------------------------------------------------------------------------
# Install callback
# ---------------------------------------------------------------------------


def install(*, code: str, remote_addr: str | None = None) -> InstallOutcome:
    """Exchange the install code for the e-shop's OAuth token and store it; reinstall reuses the row."""
    started = time.monotonic()
    attempt = InstallAttempt(code_fingerprint=_fingerprint(code), remote_addr=ip_or_none(remote_addr))
    try:
        _check_code(code)
        grant = _exchange(code)
        outcome = _store_grant(grant)
    except InstallFailed as failure:
        _record(attempt, started, outcome=InstallAttempt.Outcome.FAILED, error=failure.message)
        logger.warning("install failed status=%s reason=%s", failure.http_status, failure.message)
        raise
    _record(
        attempt,
        started,
        outcome=InstallAttempt.Outcome.REINSTALLED if outcome.reinstalled else InstallAttempt.Outcome.INSTALLED,
        installation=outcome.installation,
    )
    # API tokens minted with the previous OAuth token died with it.
    try:
        tokens.forget_access_tokens(outcome.installation)
    except CACHE_ERRORS as error:
        # The token is stored and Shoptet gets its 200: a stale cached API token is answered 401 by
        # Shoptet and replaced by the client, so a cache that is down must not fail the install.
        logger.warning("install: cached API token not dropped eshop_id=%s: %s", outcome.installation.eshop_id, error)
    logger.info("installed eshop_id=%s reinstall=%s", outcome.installation.eshop_id, outcome.reinstalled)
    return outcome


def _check_code(code: str) -> None:
    if not code:
        metrics.increment("install_callback_refused", reason="missing_code")
        raise InstallFailed("The install request carries no code.", http_status=400)
    if len(code) > MAX_CODE_LENGTH or not CODE_SHAPE.fullmatch(code):
        metrics.increment("install_callback_refused", reason="malformed_code")
        raise InstallFailed("The install code is malformed.", http_status=400)


def _exchange(code: str) -> tokens.Grant:
    try:
        return tokens.exchange_code(code)
    except OAuthError as error:
        raise InstallFailed(f"Shoptet refused the install code ({error}).", http_status=400) from error
    except TransportError as error:
        status = 504 if "in time" in str(error) else 502
        raise InstallFailed(f"The code could not be exchanged: {error}.", http_status=status) from error


@transaction.atomic
def _store_grant(grant: tokens.Grant) -> InstallOutcome:
    # The old secrets are replaced, never read: a row written under a since-dropped key heals on reinstall.
    existing = Installation.objects.select_for_update().defer("oauth_token", "webhook_signature_key")
    installation = existing.filter(eshop_id=grant.eshop_id).first()
    reinstalled = installation is not None
    if installation is None:
        installation = Installation(eshop_id=grant.eshop_id)
    installation.oauth_token = grant.access_token
    installation.eshop_url = grant.eshop_url or installation.eshop_url
    installation.contact_email = grant.contact_email or installation.contact_email
    # Registrations and the signature key may not survive an uninstall: onboarding makes them anew. Until
    # then (and for a grace window after), deliveries signed with the old key are still accepted.
    if installation.webhook_signature_key:
        installation.previous_webhook_signature_key = installation.webhook_signature_key
    installation.webhook_signature_key = ""
    installation.signature_key_renewed_at = None
    # An addon:* event created before this moment belongs to the previous installation.
    installation.lifecycle_event_at = timezone.now().replace(microsecond=0)
    installation.onboarding_status = Installation.Onboarding.PENDING
    installation.onboarding_error = ""
    installation.onboarding_enqueued_at = None
    installation.save()
    if not reinstalled:
        StatusChange.objects.create(
            installation=installation, to_status=Installation.Status.ACTIVE, cause="install callback"
        )
    elif not installation.is_active:
        installation.transition_to(Installation.Status.ACTIVE, cause="reinstall callback")
    return InstallOutcome(installation=installation, reinstalled=reinstalled)


def _fingerprint(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "replace")).hexdigest()[:16] if code else ""


def _record(
    attempt: InstallAttempt,
    started: float,
    *,
    outcome: str,
    error: str = "",
    installation: Installation | None = None,
) -> None:
    attempt.outcome = outcome
    attempt.error = error
    attempt.installation = installation
    attempt.eshop_id = installation.eshop_id if installation else None
    attempt.duration_ms = int((time.monotonic() - started) * 1000)
    attempt.save()


# ---------------------------------------------------------------------------
# Onboarding
# ---------------------------------------------------------------------------


def onboard(*, installation: Installation) -> Installation:
    """Store the e-shop's identity, get a signature key, register webhooks. Safe to run again."""
    if not installation.is_active:
        logger.info("onboarding skipped eshop_id=%s status=%s", installation.eshop_id, installation.status)
        return installation
    client = ShoptetClient(installation)
    refresh_identity(installation=installation, client=client)
    # The key must be stored before the first registration exists, or the first webhook fails its check.
    ensure_signature_key(installation=installation, client=client)
    webhook_registrations.register_webhooks(installation=installation, client=client)
    installation.onboarding_status = Installation.Onboarding.DONE
    installation.onboarding_error = ""
    installation.onboarded_at = timezone.now()
    installation.save(update_fields=["onboarding_status", "onboarding_error", "onboarded_at", "updated_at"])
    logger.info("onboarded eshop_id=%s", installation.eshop_id)
    return installation


def refresh_identity(*, installation: Installation, client: ShoptetClient | None = None) -> Installation:
    """Copy name, URL, contact, time zone and OAuth server URL from GET /api/eshop."""
    eshop = (client or ShoptetClient(installation)).get_eshop()
    contact = eshop.get("contactInformation") or {}
    settings_info = eshop.get("settings") or {}
    installation.name = str(contact.get("eshopName") or installation.name)[:255]
    installation.eshop_url = _with_scheme(str(contact.get("url") or "")) or installation.eshop_url
    installation.contact_email = installation.contact_email or str(contact.get("email") or "")
    installation.timezone = str(settings_info.get("timezone") or installation.timezone)
    installation.oauth_url = _url_of(eshop, "oauth") or installation.oauth_url
    installation.save(update_fields=["name", "eshop_url", "contact_email", "timezone", "oauth_url", "updated_at"])
    return installation


def ensure_signature_key(*, installation: Installation, client: ShoptetClient) -> bool:
    """Renew the webhook signature key unless one is stored; True when a new key was fetched."""
    with transaction.atomic():
        # Every renewal replaces Shoptet's key, so two onboarding runs must not both renew:
        # the row lock makes the second one see the first one's key.
        locked = Installation.objects.select_for_update().get(pk=installation.pk)
        if locked.webhook_signature_key:
            installation.webhook_signature_key = locked.webhook_signature_key
            return False
        locked.webhook_signature_key = client.renew_signature_key()
        locked.signature_key_renewed_at = timezone.now()
        locked.save(update_fields=["webhook_signature_key", "signature_key_renewed_at", "updated_at"])
    installation.webhook_signature_key = locked.webhook_signature_key
    installation.signature_key_renewed_at = locked.signature_key_renewed_at
    return True


def request_signature_key_renewal(*, installation: Installation) -> Installation:
    """Have onboarding fetch a new signature key; the current one stays accepted until then and for a grace window."""
    with transaction.atomic():
        locked = Installation.objects.select_for_update().get(pk=installation.pk)
        if locked.webhook_signature_key:
            locked.previous_webhook_signature_key = locked.webhook_signature_key
        locked.webhook_signature_key = ""
        locked.signature_key_renewed_at = None
        locked.onboarding_status = Installation.Onboarding.PENDING
        locked.onboarding_enqueued_at = None
        locked.save(
            update_fields=[
                "webhook_signature_key",
                "previous_webhook_signature_key",
                "signature_key_renewed_at",
                "onboarding_status",
                "onboarding_enqueued_at",
                "updated_at",
            ]
        )
    return locked


def record_onboarding_failure(*, installation: Installation, error: Exception) -> None:
    installation.onboarding_status = Installation.Onboarding.FAILED
    installation.onboarding_error = str(error)[:2000]
    installation.save(update_fields=["onboarding_status", "onboarding_error", "updated_at"])
    logger.error("onboarding failed eshop_id=%s error=%s", installation.eshop_id, error)
    notifications.notify_onboarding_failure(installation=installation)


@transaction.atomic
def claim_pending_onboarding(*, stale_after: timedelta, limit: int = 100) -> list[int]:
    """Claim installations whose onboarding is pending and not enqueued (or enqueued long ago and lost).

    The install callback only writes the database; this relay turns pending rows into tasks, so an
    install answered while the broker was down is onboarded as soon as the broker is back.
    """
    now = timezone.now()
    pending = (
        Installation.objects.select_for_update(skip_locked=True)
        .filter(status=Installation.Status.ACTIVE, onboarding_status=Installation.Onboarding.PENDING)
        .filter(Q(onboarding_enqueued_at__isnull=True) | Q(onboarding_enqueued_at__lt=now - stale_after))
        .order_by("pk")
    )
    pks = list(pending.values_list("pk", flat=True)[:limit])
    Installation.objects.filter(pk__in=pks).update(onboarding_enqueued_at=now)
    return pks


def _url_of(eshop: dict[str, Any], ident: str) -> str:
    for entry in eshop.get("urls") or []:
        if isinstance(entry, dict) and entry.get("ident") == ident:
            return str(entry.get("url") or "")
    return ""


def _with_scheme(url: str) -> str:
    if url and "://" not in url:
        return f"https://{url}"
    return url


# ---------------------------------------------------------------------------
# Key rotation
# ---------------------------------------------------------------------------


def reencrypt_secrets() -> int:
    """Rewrite every secret under the first TOKEN_ENCRYPTION_KEYS key; after this the old keys can go."""
    count = 0
    for pk in Installation.objects.values_list("pk", flat=True).iterator():
        with transaction.atomic():
            # Loading decrypts with whichever key fits; saving encrypts with the first.
            installation = Installation.objects.select_for_update().get(pk=pk)
            installation.save(update_fields=["oauth_token", "webhook_signature_key", "previous_webhook_signature_key"])
        count += 1
    return count


# ---------------------------------------------------------------------------
# Life cycle: Shoptet's addon:* events (webhooks.webhook_handlers calls these)
# ---------------------------------------------------------------------------


def suspend(*, installation: Installation, cause: str, event_created: datetime | None = None) -> bool:
    """No API calls and no processing for the e-shop until it is approved again; True when the status changed."""
    return _change_status(installation, Installation.Status.SUSPENDED, cause=cause, event_created=event_created)


def approve(*, installation: Installation, cause: str, event_created: datetime | None = None) -> bool:
    """Active again; deliveries held while suspended are processed and a pending onboarding is resumed."""
    changed = _change_status(installation, Installation.Status.ACTIVE, cause=cause, event_created=event_created)
    if installation.is_active:
        Installation.objects.filter(pk=installation.pk, onboarding_status=Installation.Onboarding.PENDING).update(
            onboarding_enqueued_at=None
        )
        webhook_outbox.resume_deliveries(installation=installation)
    return changed


def uninstall(*, installation: Installation, cause: str, event_created: datetime | None = None) -> bool:
    """The e-shop removed the addon: tokens discarded, registrations gone, nothing more is processed."""
    return _change_status(installation, Installation.Status.UNINSTALLED, cause=cause, event_created=event_created)


def terminate(*, installation: Installation, cause: str, event_created: datetime | None = None) -> bool:
    """Terminated by the merchant or Shoptet staff: treated like an uninstall (platform contract §9)."""
    return _change_status(installation, Installation.Status.TERMINATED, cause=cause, event_created=event_created)


def mirror_addon_refusal(*, tenant: Installation, error: OAuthError, **_: object) -> None:
    """getAccessToken answered that the addon is suspended or not installed: the tenant follows Shoptet's word."""
    cause = f"getAccessToken answered {error.error}"
    if isinstance(error, AddonSuspended):
        suspend(installation=tenant, cause=cause)
    elif isinstance(error, AddonNotInstalled):
        uninstall(installation=tenant, cause=cause)


_ENTERED_FROM: dict[str, set[str]] = {
    Installation.Status.SUSPENDED: {Installation.Status.ACTIVE},
    Installation.Status.ACTIVE: {Installation.Status.SUSPENDED},
    Installation.Status.UNINSTALLED: {Installation.Status.ACTIVE, Installation.Status.SUSPENDED},
    Installation.Status.TERMINATED: {
        Installation.Status.ACTIVE,
        Installation.Status.SUSPENDED,
        Installation.Status.UNINSTALLED,
    },
}


def _change_status(installation: Installation, target: str, *, cause: str, event_created: datetime | None) -> bool:
    changed = False
    with transaction.atomic():
        locked = Installation.objects.select_for_update().get(pk=installation.pk)
        if event_created is not None and locked.lifecycle_event_at and event_created < locked.lifecycle_event_at:
            # Shoptet sends events unordered: one created before the last change applied is old news.
            logger.info(
                "stale life-cycle event ignored eshop_id=%s target=%s created=%s",
                locked.eshop_id,
                target,
                event_created.isoformat(),
            )
        elif locked.status not in _ENTERED_FROM[target] | {target}:
            # e.g. approve after an uninstall: only a new install brings an uninstalled e-shop back.
            logger.info(
                "life-cycle event ignored eshop_id=%s status=%s target=%s", locked.eshop_id, locked.status, target
            )
        else:
            changed = locked.transition_to(target, cause=cause)
            if event_created is not None:
                locked.lifecycle_event_at = event_created
                locked.save(update_fields=["lifecycle_event_at", "updated_at"])
    installation.refresh_from_db()
    if installation.status in _ENDED and target in _ENDED:
        # Also when getAccessToken mirrored the uninstall first: the clean-up is due either way.
        tokens.forget_access_tokens(installation)
        # Registrations belong to the installation at Shoptet and die with it.
        installation.webhook_registrations.all().delete()
    logger.info("life cycle eshop_id=%s status=%s changed=%s cause=%s", installation.eshop_id, target, changed, cause)
    if changed:
        notifications.notify_status_change(installation=installation, status=target)
    return changed


_ENDED = (Installation.Status.UNINSTALLED, Installation.Status.TERMINATED)
