"""REST API endpoints of the E-shop and Webhooks tags."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from . import data, params, schema
from .clock import format_datetime
from .messages import ApiError, Request
from .state import FakeEshop

if TYPE_CHECKING:
    from .fake import FakeShoptet

MAX_WEBHOOKS_PER_CALL = 50  # spec: "It is possible to enter up to 50 webhooks using a single call."
MAX_URL_LENGTH = 2000
# Shoptet answers 409 when one installation registers both events of a pair (spec, webhook event types).
CONFLICTING_EVENTS = [
    ("order:update", "order:cancel"),
    ("customer:update", "customer:disableOrders"),
    ("customer:update", "customer:enableOrders"),
]


# -- E-shop -------------------------------------------------------------------------------------------------
def get_eshop(fake: FakeShoptet, request: Request, eshop: FakeEshop) -> tuple[int, Any]:
    """`GET /api/eshop`; `urls` are always present, other sections come with `include`."""
    info = data.eshop_info(data.EshopIdentity(eshop.eshop_id, eshop.name, eshop.url, eshop.email))
    properties = schema.schema("eshop")["properties"]
    for include in params.includes(request.query):
        key = next((name for name in properties if name.lower() == include), None)
        if key == "orderStatuses":
            info[key] = data.order_statuses()
        elif key is not None and key not in info:
            info[key] = schema.default(properties[key])
    return 200, info


# -- Webhooks -----------------------------------------------------------------------------------------------
def list_webhooks(fake: FakeShoptet, request: Request, eshop: FakeEshop) -> tuple[int, Any]:
    with fake.state.lock:
        hooks = [dict(hook) for hook in sorted(eshop.webhooks.values(), key=lambda hook: hook["id"])]
    page, paginator = params.paginate(hooks, request.query, default=20, maximum=500)
    return 200, {"webhooks": page, "paginator": paginator}


def register_webhooks(fake: FakeShoptet, request: Request, eshop: FakeEshop) -> tuple[int, Any]:
    """`POST /api/webhooks`: all or nothing; one URL per event; conflicting pairs refused."""
    items = _body_data(request, list)
    if len(items) > MAX_WEBHOOKS_PER_CALL:
        message = f"At most {MAX_WEBHOOKS_PER_CALL} webhooks can be registered in one request, {len(items)} given."
        raise ApiError(400, "invalid-request-data", message, "data")
    for item in items:
        _check_item(item)
    with fake.state.lock:
        events = [item["event"] for item in items]
        registered = {hook["event"] for hook in eshop.webhooks.values()}
        for event in events:
            if event in registered or events.count(event) > 1:
                raise ApiError(422, "webhook-exists", "Webhook already exists for this event", event)
        _check_conflicts(registered | set(events))
        created = [add_webhook(fake, eshop, item["event"], item["url"], item.get("sendPayload")) for item in items]
    return 201, {"webhooks": created}


def add_webhook(
    fake: FakeShoptet, eshop: FakeEshop, event: str, url: str, send_payload: str | None = None
) -> dict[str, Any]:
    """Store a registration (no rule checks) and return a copy in the API's shape."""
    hook: dict[str, Any] = {
        "id": fake.state.next_webhook_id,
        "event": event,
        "url": url,
        "created": format_datetime(fake.clock.now()),
        "updated": None,
        "sendPayload": send_payload,
    }
    fake.state.next_webhook_id += 1
    eshop.webhooks[hook["id"]] = hook
    return dict(hook)


def _body_data(request: Request, expected: type) -> Any:
    """The `data` member of the JSON body; an unparseable or misshapen body is a 422 (spec, status codes)."""
    try:
        body = request.json()
    except ValueError:
        raise ApiError(422, "invalid-request-data", "Request body is not a valid JSON.", "body") from None
    if not isinstance(body, dict) or not isinstance(body.get("data"), expected) or set(body) != {"data"}:
        raise ApiError(422, "invalid-request-data", "Request body does not match the expected schema.", "data")
    return body["data"]


def _check_item(item: Any) -> None:
    if not isinstance(item, dict) or not isinstance(item.get("event"), str) or not isinstance(item.get("url"), str):
        raise ApiError(422, "invalid-request-data", "Each webhook needs a string event and url.", "data")
    if set(item) - {"event", "url", "sendPayload"} or item.get("sendPayload") not in (None, "full"):
        raise ApiError(422, "invalid-request-data", "Unexpected webhook attributes.", "data")
    if item["event"] not in schema.webhook_events():
        message = f'Event "{item["event"]}" is not supported (system addon:* webhooks are set in the addon settings).'
        raise ApiError(400, "invalid-request-data", message, item["event"])
    _check_url(item["url"])


def _check_url(url: str) -> None:
    if len(url) > MAX_URL_LENGTH or not url.startswith(("http://", "https://")):
        raise ApiError(400, "invalid-request-data", f"Invalid webhook URL (max {MAX_URL_LENGTH} characters).", "url")


def _check_conflicts(events: set[str]) -> None:
    for first, second in CONFLICTING_EVENTS:
        if first in events and second in events:
            message = f'Event "{first}" cannot be registered together with "{second}".'
            raise ApiError(409, "webhook-conflict", message, second)


def _webhook(eshop: FakeEshop, request: Request) -> dict[str, Any]:
    raw = request.params["id"]
    hook = eshop.webhooks.get(int(raw)) if raw.isdigit() else None
    if hook is None:
        raise ApiError(404, "webhook-not-found", f'Webhook with id "{raw}" not found.', raw)
    return hook


def get_webhook(fake: FakeShoptet, request: Request, eshop: FakeEshop) -> tuple[int, Any]:
    with fake.state.lock:
        return 200, {"webhook": dict(_webhook(eshop, request))}


def update_webhook(fake: FakeShoptet, request: Request, eshop: FakeEshop) -> tuple[int, Any]:
    changes = _body_data(request, dict)
    if not changes or set(changes) - {"url", "sendPayload"} or changes.get("sendPayload") not in (None, "full"):
        raise ApiError(422, "invalid-request-data", "Send url and/or sendPayload.", "data")
    if "url" in changes:
        if not isinstance(changes["url"], str):
            raise ApiError(422, "invalid-request-data", "url must be a string.", "url")
        _check_url(changes["url"])
    with fake.state.lock:
        hook = _webhook(eshop, request)
        hook.update(changes, updated=format_datetime(fake.clock.now()))
        return 200, {"webhook": dict(hook)}


def delete_webhook(fake: FakeShoptet, request: Request, eshop: FakeEshop) -> tuple[int, Any]:
    with fake.state.lock:
        del eshop.webhooks[_webhook(eshop, request)["id"]]
    return 200, None


def renew_signature_key(fake: FakeShoptet, request: Request, eshop: FakeEshop) -> tuple[int, Any]:
    """Always a new key; the previous one stops signing immediately."""
    with fake.state.lock:
        eshop.signature_key = secrets.token_hex(16)
        return 200, {"signatureKey": eshop.signature_key}


def list_notifications(fake: FakeShoptet, request: Request, eshop: FakeEshop) -> tuple[int, Any]:
    """Delivery log of the last 7 days, filterable by status, event, active and from."""
    query = request.query
    since = params.moment(query, "from")
    active = params.boolean(query, "active")
    with fake.state.lock:
        horizon = fake.clock.now().timestamp() - 7 * 24 * 3600
        notifications = [
            notification.to_api()
            for notification in reversed(eshop.notifications)
            if notification.webhook_id  # system (addon:*) events and ad-hoc URLs are not registrations
            and notification.created.timestamp() >= horizon
            and (since is None or notification.created >= since)
            and query.get("status") in (None, "", notification.status)
            and query.get("event") in (None, "", notification.event)
            and active in (None, notification.active)
        ]
    page, paginator = params.paginate(notifications, query, default=20, maximum=500)
    return 200, {"notifications": page, "paginator": paginator}
