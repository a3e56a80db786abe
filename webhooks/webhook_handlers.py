"""Built-in handlers: the tenant's life cycle, the e-shop's identity, and a fallback for synced resources."""

from __future__ import annotations

import logging

from installations import services as installation_services
from webhooks.handlers import WebhookEvent, fallback, handles, handles_first

logger = logging.getLogger(__name__)


@handles_first("addon:suspend")
def suspend(event: WebhookEvent) -> None:
    installation_services.suspend(
        installation=event.installation, cause="addon:suspend webhook", event_created=event.created
    )


@handles_first("addon:approve")
def approve(event: WebhookEvent) -> None:
    installation_services.approve(
        installation=event.installation, cause="addon:approve webhook", event_created=event.created
    )


@handles_first("addon:uninstall")
def uninstall(event: WebhookEvent) -> None:
    installation_services.uninstall(
        installation=event.installation, cause="addon:uninstall webhook", event_created=event.created
    )


@handles_first("addon:terminate")
def terminate(event: WebhookEvent) -> None:
    installation_services.terminate(
        installation=event.installation, cause="addon:terminate webhook", event_created=event.created
    )


@handles("eshop:*")
def refresh_identity(event: WebhookEvent) -> None:
    installation_services.refresh_identity(installation=event.installation)


@fallback("order:*", "invoice:*", "job:finished")
def record_only(event: WebhookEvent) -> None:
    """Until an app handles these, the delivery log is the record."""
    logger.info(
        "webhook recorded eshop_id=%s event=%s codes=%s", event.installation.eshop_id, event.event, len(event.codes)
    )
