"""Built-in handlers: the tenant's life cycle and the e-shop's identity."""

from __future__ import annotations

from installations import services as installation_services
from webhooks.registry import WebhookEvent, handles, handles_first


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
