"""Webhook registrations at Shoptet, kept equal to the configured set."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from installations.models import Installation
from shoptet_api.client import ShoptetClient
from shoptet_api.errors import Conflict, Unprocessable
from webhooks.models import WebhookRegistration

logger = logging.getLogger(__name__)

# Shoptet accepts at most 50 registrations in one POST /api/webhooks.
REGISTRATION_BATCH = 50


@dataclass
class RegistrationResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def webhook_url() -> str:
    return f"{settings.PUBLIC_URL}/shoptet/webhooks/"


def register_webhooks(*, installation: Installation, client: ShoptetClient) -> RegistrationResult:
    """Make Shoptet's registrations for the configured events point at us; change nothing that is right."""
    url = webhook_url()
    result = RegistrationResult()
    existing = _by_event(client.list_webhooks())
    for event in settings.SHOPTET_WEBHOOK_EVENTS:
        current = existing.get(event)
        if current is None:
            continue
        if current.get("url") == url:
            result.unchanged.append(event)
        else:
            existing[event] = client.update_webhook(int(current["id"]), url=url) or {**current, "url": url}
            result.updated.append(event)
    missing = [event for event in settings.SHOPTET_WEBHOOK_EVENTS if event not in existing]
    for start in range(0, len(missing), REGISTRATION_BATCH):
        batch = missing[start : start + REGISTRATION_BATCH]
        existing.update(_create(client, batch, url))
        result.created.extend(batch)
    _mirror(installation, {event: existing[event] for event in settings.SHOPTET_WEBHOOK_EVENTS if event in existing})
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
