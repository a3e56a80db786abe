"""Registrations at Shoptet: the configured events pointed at our endpoint, drift repaired, watch slices."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet

from config.sweeps import EVERYTHING, Slice, slice_at
from installations import toggles
from installations.models import Installation
from shoptet_api.client import ShoptetClient
from shoptet_api.errors import Conflict, Unprocessable
from webhooks.models import MAX_ERROR_LENGTH, RegistrationDrift, WebhookRegistration

logger = logging.getLogger(__name__)

# Shoptet accepts at most 50 registrations in one POST /api/webhooks.
REGISTRATION_BATCH = 50


def webhook_url() -> str:
    """The endpoint every registration at Shoptet points at."""
    return f"{settings.PUBLIC_URL}/shoptet/webhooks/"


@dataclass
class RegistrationResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


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
