"""Webhook delivery: Shoptet's body format, the HMAC-SHA1 signature, and the notification log."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from .clock import format_datetime
from .state import Notification

if TYPE_CHECKING:
    from .fake import FakeShoptet

SIGNATURE_HEADER = "Shoptet-Webhook-Signature"


def sign(body: bytes, key: str) -> str:
    """Hex HMAC-SHA1 of the raw body, keyed with the signature key string as-is (Shoptet's SDK does the same)."""
    return hmac.new(key.encode(), body, hashlib.sha1).hexdigest()


def encode(payload: dict[str, Any]) -> bytes:
    """Serialise like PHP's json_encode: compact, ASCII only, and `/` escaped as `\\/`.

    Receivers must verify the raw bytes; re-serialising the parsed JSON would not give the same signature.
    """
    return json.dumps(payload, separators=(",", ":")).replace("/", "\\/").encode()


def deliver(
    fake: FakeShoptet,
    eshop_id: int,
    event: str,
    instance: str,
    *,
    url: str | None = None,
    signature: str | None = None,
    body_override: bytes | None = None,
) -> int:
    """POST one signed notification; return the receiver's HTTP status (0 when it could not be reached).

    Raises LookupError when there is no such e-shop or no URL for the event.
    """
    notification = _prepare(fake, eshop_id, event, instance, url, signature, body_override)
    if notification is None:
        raise LookupError(f"no webhook URL for {event!r} on e-shop {eshop_id}")
    return attempt(fake, eshop_id, notification)


def deliver_if_registered(fake: FakeShoptet, eshop_id: int, event: str, instance: str) -> int | None:
    """Deliver when the installation registered `event`; None when nobody listens (Shoptet sends nothing)."""
    notification = _prepare(fake, eshop_id, event, instance)
    return None if notification is None else attempt(fake, eshop_id, notification)


def _prepare(
    fake: FakeShoptet,
    eshop_id: int,
    event: str,
    instance: str,
    url: str | None = None,
    signature: str | None = None,
    body_override: bytes | None = None,
) -> Notification | None:
    """Record the notification to send, or None when there is nowhere to send it."""
    with fake.state.lock:
        eshop = fake.state.eshops.get(eshop_id)
        webhook_id, target = _target(fake, eshop_id, event)
        target = url or target
        if eshop is None or target is None:
            return None
        created = fake.clock.now()
        payload = {
            "eshopId": eshop_id,
            "event": event,
            "eventCreated": format_datetime(created),
            "eventInstance": instance,
        }
        body = body_override if body_override is not None else encode(payload)
        notification = Notification(
            id=fake.state.next_notification_id,
            webhook_id=webhook_id,
            webhook_url=target,
            event=event,
            event_created=created,
            created=created,
            data=payload,
            body=body,
            signature=signature if signature is not None else sign(body, eshop.signature_key),
        )
        fake.state.next_notification_id += 1
        eshop.notifications.append(notification)
        return notification


def attempt(fake: FakeShoptet, eshop_id: int, notification: Notification) -> int:
    """One delivery attempt of `notification` (the same bytes and signature on every attempt)."""
    status = _post(notification.webhook_url, notification.body, notification.signature, fake.webhook_timeout)
    with fake.state.lock:
        notification.attempts += 1
        notification.attempted = fake.clock.now()
        notification.response_status = status
        notification.status = "success" if status == 200 else "failed"
        eshop = fake.state.eshops.get(eshop_id)
        if eshop is not None:
            eshop.stats.webhooks_sent += 1
    return status


def _target(fake: FakeShoptet, eshop_id: int, event: str) -> tuple[int, str | None]:
    """(webhook id, URL) for an event; system `addon:*` events go to the URL from the addon's settings."""
    if event.startswith("addon:"):
        return 0, fake.state.system_webhook_url
    eshop = fake.state.eshops.get(eshop_id)
    hook = eshop.webhook_for(event) if eshop else None
    return (hook["id"], hook["url"]) if hook else (0, None)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is the receiver's answer, not something to follow: a moved webhook URL is a misconfiguration."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(NoRedirect)


def _post(url: str, body: bytes, signature: str, timeout: float) -> int:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: signature, "User-Agent": "Shoptet-Webhook"},
    )
    try:
        with _opener.open(request, timeout=timeout) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (TimeoutError, urllib.error.URLError, ConnectionError):
        return 0
