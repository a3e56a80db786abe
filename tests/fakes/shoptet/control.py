"""Control API under `/_fake/` for other processes (demo mode, multi-process tests), plus a tiny index page.

Bodies are JSON objects (form-encoded also works); keys are camelCase like Shoptet's. Answers are JSON.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .messages import Request, Response

if TYPE_CHECKING:
    from .fake import FakeShoptet

# Control-API names of the FakeShoptet settings that `POST /_fake/settings` may change.
SETTINGS = {
    "jobDuration": "job_duration",
    "neverFinishJobs": "never_finish_jobs",
    "suppressJobWebhook": "suppress_job_webhook",
    "tokenTtl": "token_ttl",
    "installDeadline": "install_deadline",
    "enforceBucket": "enforce_bucket",
    "invalidTokenStatus": "invalid_token_status",
    "notInstalledStatus": "not_installed_status",
    "suspendedStatus": "suspended_status",
    "maxTokensStatus": "max_tokens_status",
    "defaultInstallUrl": "default_install_url",
}


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _body(request: Request) -> dict[str, Any]:
    if not request.body.strip():
        return {}
    if "json" in request.headers.get("Content-Type", "") or request.body.lstrip().startswith(b"{"):
        try:
            body = request.json()
        except ValueError:
            raise ControlError(400, "body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ControlError(400, "body must be a JSON object")
        return body
    return dict(request.fields())


def _eshop_id(request: Request, fake: FakeShoptet) -> int:
    eshop_id = int(request.params["eshopId"])
    if eshop_id not in fake.state.eshops:
        raise ControlError(404, f"unknown e-shop {eshop_id}")
    return eshop_id


def _summary(fake: FakeShoptet, eshop_id: int) -> dict[str, Any]:
    with fake.state.lock:
        eshop = fake.eshop(eshop_id)
        return {
            "eshopId": eshop.eshop_id,
            "name": eshop.name,
            "url": eshop.url,
            "status": eshop.status,
            "signatureKey": eshop.signature_key,
            "oauthToken": eshop.oauth_token,
            "webhooks": [dict(hook) for hook in eshop.webhooks.values()],
            "orders": len(eshop.orders),
            "invoices": len(eshop.invoices),
            "jobs": [job.to_api() for job in eshop.jobs.values()],
        }


def stats(fake: FakeShoptet, request: Request) -> Any:
    eshop_id = request.query.get("eshopId")
    if not eshop_id:
        return fake.stats()
    if not eshop_id.isdigit() or int(eshop_id) not in fake.state.eshops:
        raise ControlError(404, f"unknown e-shop {eshop_id}")
    return fake.stats(int(eshop_id))


def reset(fake: FakeShoptet, request: Request) -> Any:
    fake.reset()
    return {"reset": True}


def list_eshops(fake: FakeShoptet, request: Request) -> Any:
    return [_summary(fake, eshop_id) for eshop_id in sorted(fake.state.eshops)]


def add_eshop(fake: FakeShoptet, request: Request) -> Any:
    body = _body(request)
    if "eshopId" not in body:
        raise ControlError(400, "eshopId is required")
    try:
        eshop = fake.add_eshop(
            int(body["eshopId"]),
            orders=int(body.get("orders", 0)),
            invoices=int(body.get("invoices", 0)),
            name=body.get("name"),
            seed=body.get("seed"),
        )
    except ValueError as error:
        raise ControlError(409, str(error)) from None
    return _summary(fake, eshop.eshop_id)


def get_eshop(fake: FakeShoptet, request: Request) -> Any:
    return _summary(fake, _eshop_id(request, fake))


def install(fake: FakeShoptet, request: Request) -> Any:
    install_url = _body(request).get("installUrl") or fake.default_install_url
    if not install_url:
        raise ControlError(400, "installUrl is required")
    status, body = fake.install(_eshop_id(request, fake), install_url)
    return {"status": status, "body": body}


def install_code(fake: FakeShoptet, request: Request) -> Any:
    return {"code": fake.issue_install_code(_eshop_id(request, fake), _body(request).get("redirectUri"))}


def admin_code(fake: FakeShoptet, request: Request) -> Any:
    return {"code": fake.issue_admin_code(_eshop_id(request, fake), _body(request).get("redirectUri"))}


def _lifecycle(action: str) -> Callable[[FakeShoptet, Request], Any]:
    def handler(fake: FakeShoptet, request: Request) -> Any:
        send = bool(_body(request).get("sendSystemWebhook", True))
        webhook_status = getattr(fake, action)(_eshop_id(request, fake), send_system_webhook=send)
        return {"status": fake.eshop(int(request.params["eshopId"])).status, "webhookStatus": webhook_status}

    handler.__name__ = action
    return handler


def expire_tokens(fake: FakeShoptet, request: Request) -> Any:
    fake.expire_api_tokens(_eshop_id(request, fake))
    return {"expired": True}


def fail_next_job(fake: FakeShoptet, request: Request) -> Any:
    fake.fail_next_job(_eshop_id(request, fake))
    return {"failNextJob": True}


def create_order(fake: FakeShoptet, request: Request) -> Any:
    webhook = bool(_body(request).get("webhook", True))
    return {"code": fake.create_order(_eshop_id(request, fake), webhook=webhook)}


def update_order(fake: FakeShoptet, request: Request) -> Any:
    """Body `{"changes": {"paid": true, "status": -3}, "webhook": true}`."""
    body = _body(request)
    eshop_id = _eshop_id(request, fake)
    try:
        order = fake.update_order(
            eshop_id, request.params["code"], webhook=body.get("webhook", True), **body.get("changes", {})
        )
    except KeyError:
        raise ControlError(404, f"unknown order {request.params['code']!r}") from None
    except ValueError as error:
        raise ControlError(400, str(error)) from None
    return {"order": order}


def delete_order(fake: FakeShoptet, request: Request) -> Any:
    try:
        fake.delete_order(_eshop_id(request, fake), request.params["code"], webhook=_body(request).get("webhook", True))
    except KeyError:
        raise ControlError(404, f"unknown order {request.params['code']!r}") from None
    return {"deleted": True}


def create_invoice(fake: FakeShoptet, request: Request) -> Any:
    body = _body(request)
    try:
        code = fake.create_invoice(_eshop_id(request, fake), body.get("orderCode"), webhook=body.get("webhook", True))
    except KeyError:
        raise ControlError(404, f"unknown order {body.get('orderCode')!r}") from None
    return {"code": code}


def update_invoice(fake: FakeShoptet, request: Request) -> Any:
    body = _body(request)
    eshop_id = _eshop_id(request, fake)
    try:
        invoice = fake.update_invoice(
            eshop_id, request.params["code"], webhook=body.get("webhook", True), **body.get("changes", {})
        )
    except KeyError:
        raise ControlError(404, f"unknown invoice {request.params['code']!r}") from None
    return {"invoice": invoice}


def delete_invoice(fake: FakeShoptet, request: Request) -> Any:
    try:
        fake.delete_invoice(
            _eshop_id(request, fake), request.params["code"], webhook=_body(request).get("webhook", True)
        )
    except KeyError:
        raise ControlError(404, f"unknown invoice {request.params['code']!r}") from None
    return {"deleted": True}


def send_webhook(fake: FakeShoptet, request: Request) -> Any:
    body = _body(request)
    try:
        status = fake.send_webhook(_eshop_id(request, fake), body["event"], str(body["instance"]), url=body.get("url"))
    except KeyError:
        raise ControlError(400, "event and instance are required") from None
    except LookupError as error:
        raise ControlError(409, str(error)) from None
    return {"status": status}


def add_fault(fake: FakeShoptet, request: Request) -> Any:
    body = _body(request)
    if "pathRegex" not in body or "status" not in body:
        raise ControlError(400, "pathRegex and status are required")
    fake.add_fault(
        body.get("method"),
        body["pathRegex"],
        int(body["status"]),
        times=int(body.get("times", 1)),
        body=body.get("body"),
        headers=body.get("headers"),
        delay=float(body.get("delay", 0.0)),
    )
    return {"faults": len(fake.state.faults)}


def clear_faults(fake: FakeShoptet, request: Request) -> Any:
    fake.clear_faults()
    return {"faults": 0}


def system_webhook_url(fake: FakeShoptet, request: Request) -> Any:
    fake.set_system_webhook_url(_body(request).get("url"))
    return {"url": fake.state.system_webhook_url}


def advance_time(fake: FakeShoptet, request: Request) -> Any:
    fake.advance_time(float(_body(request).get("seconds", 0)))
    return {"now": fake.clock.now().isoformat()}


def settings(fake: FakeShoptet, request: Request) -> Any:
    """Change settings on this fake instance, e.g. `{"jobDuration": 2, "neverFinishJobs": true}`."""
    body = _body(request)
    unknown = set(body) - set(SETTINGS)
    if unknown:
        raise ControlError(400, f"unknown settings: {', '.join(sorted(unknown))}")
    for name, attribute in SETTINGS.items():
        if name in body:
            setattr(fake, attribute, body[name])
    return {name: getattr(fake, attribute) for name, attribute in SETTINGS.items()}


def index(fake: FakeShoptet, request: Request) -> Response:
    """A page for the demo: e-shops and a button that makes Shoptet install the addon."""
    rows = []
    for eshop in list_eshops(fake, request):
        action = f"/_fake/eshops/{eshop['eshopId']}/install"
        rows.append(
            f"<tr><td>{eshop['eshopId']}</td><td>{html.escape(eshop['name'])}</td><td>{eshop['status']}</td>"
            f"<td>{eshop['orders']}</td><td>{eshop['invoices']}</td>"
            f'<td><form method="post" action="{action}"><button>Install addon</button></form></td></tr>'
        )
    page = (
        "<!doctype html><meta charset=utf-8><title>Fake Shoptet</title><h1>Fake Shoptet</h1>"
        f"<p>Partner URL: <code>{fake.partner_url}</code> · API URL: <code>{fake.api_url}</code></p>"
        "<table border=1 cellpadding=4><tr><th>e-shop</th><th>name</th><th>status</th><th>orders</th>"
        f"<th>invoices</th><th></th></tr>{''.join(rows)}</table>"
    )
    return Response.text(200, page)


def _json(handler: Callable[[FakeShoptet, Request], Any]) -> Callable[[FakeShoptet, Request], Response]:
    def wrapped(fake: FakeShoptet, request: Request) -> Response:
        try:
            return Response.json(200, handler(fake, request))
        except ControlError as error:
            return Response.json(error.status, {"error": str(error)})

    wrapped.__name__ = handler.__name__
    return wrapped


_ESHOP = "/_fake/eshops/{eshopId}"

# (method, path template, handler); the server puts these into its route table.
ROUTES: list[tuple[str, str, Callable[[FakeShoptet, Request], Response]]] = [
    ("GET", "/", index),
    ("GET", "/_fake/stats", _json(stats)),
    ("POST", "/_fake/reset", _json(reset)),
    ("GET", "/_fake/eshops", _json(list_eshops)),
    ("POST", "/_fake/eshops", _json(add_eshop)),
    ("GET", _ESHOP, _json(get_eshop)),
    ("POST", f"{_ESHOP}/install", _json(install)),
    ("POST", f"{_ESHOP}/install-code", _json(install_code)),
    ("POST", f"{_ESHOP}/admin-code", _json(admin_code)),
    ("POST", f"{_ESHOP}/uninstall", _json(_lifecycle("uninstall"))),
    ("POST", f"{_ESHOP}/terminate", _json(_lifecycle("terminate"))),
    ("POST", f"{_ESHOP}/suspend", _json(_lifecycle("suspend"))),
    ("POST", f"{_ESHOP}/approve", _json(_lifecycle("approve"))),
    ("POST", f"{_ESHOP}/expire-tokens", _json(expire_tokens)),
    ("POST", f"{_ESHOP}/fail-next-job", _json(fail_next_job)),
    ("POST", f"{_ESHOP}/orders", _json(create_order)),
    ("POST", f"{_ESHOP}/orders/{{code}}/update", _json(update_order)),
    ("POST", f"{_ESHOP}/orders/{{code}}/delete", _json(delete_order)),
    ("POST", f"{_ESHOP}/invoices", _json(create_invoice)),
    ("POST", f"{_ESHOP}/invoices/{{code}}/update", _json(update_invoice)),
    ("POST", f"{_ESHOP}/invoices/{{code}}/delete", _json(delete_invoice)),
    ("POST", f"{_ESHOP}/webhooks/send", _json(send_webhook)),
    ("POST", "/_fake/faults", _json(add_fault)),
    ("DELETE", "/_fake/faults", _json(clear_faults)),
    ("POST", "/_fake/system-webhook-url", _json(system_webhook_url)),
    ("POST", "/_fake/advance-time", _json(advance_time)),
    ("POST", "/_fake/settings", _json(settings)),
]
