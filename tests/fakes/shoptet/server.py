"""HTTP plumbing: the route table and the request pipeline (faults, rate limits, auth, envelope, request log)."""

from __future__ import annotations

import math
import re
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import api, control, documents, jobs, oauth
from .clock import format_http_date
from .messages import ApiError, Request, Response, envelope, oauth_error
from .state import SUSPENDED, UNINSTALLED, FakeEshop, Fault

if TYPE_CHECKING:
    from .fake import FakeShoptet

API, PUBLIC, CONTROL = "api", "public", "control"
BUCKET_HEADER = "X-RateLimit-Bucket-Filling"

# Error codes used when an injected fault has no body of its own.
FAULT_ERROR_CODES = {
    400: "invalid-request-data",
    401: "invalid-token",
    403: "invalid-token-no-rights",
    404: "not-found",
    409: "conflict",
    413: "payload-too-large",
    422: "invalid-request-data",
    423: "locked",
    429: "too-many-requests",
    500: "internal-error",
    503: "service-unavailable",
}


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # e.g. "/api/orders/{code}"; also the key of the request counters
    handler: Callable[..., Any]
    kind: str
    pattern: re.Pattern[str]


def _route(method: str, template: str, handler: Callable[..., Any], kind: str) -> Route:
    """`{name}` matches one still-encoded path segment, so an order code `2026/1` must arrive as `2026%2F1`."""
    regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return Route(method, template, handler, kind, re.compile(regex + "$"))


PARTNER_OAUTH = "/partner/action/ApiOAuthServer"
ESHOP_OAUTH = "/eshops/{eshopId}/action/OAuthServer"

# First match wins: fixed paths come before `{code}`.
ROUTES = [
    _route("GET", "/api/eshop", api.get_eshop, API),
    _route("GET", "/api/webhooks", api.list_webhooks, API),
    _route("POST", "/api/webhooks", api.register_webhooks, API),
    _route("POST", "/api/webhooks/renew-signature-key", api.renew_signature_key, API),
    _route("GET", "/api/webhooks/notifications", api.list_notifications, API),
    _route("GET", "/api/webhooks/{id}", api.get_webhook, API),
    _route("PATCH", "/api/webhooks/{id}", api.update_webhook, API),
    _route("DELETE", "/api/webhooks/{id}", api.delete_webhook, API),
    _route("GET", "/api/orders", documents.list_orders, API),
    _route("GET", "/api/orders/changes", documents.order_changes, API),
    _route("GET", "/api/orders/snapshot", documents.order_snapshot, API),
    _route("GET", "/api/orders/{code}", documents.get_order, API),
    _route("GET", "/api/invoices", documents.list_invoices, API),
    _route("GET", "/api/invoices/changes", documents.invoice_changes, API),
    _route("GET", "/api/invoices/snapshot", documents.invoice_snapshot, API),
    _route("GET", "/api/invoices/{code}", documents.get_invoice, API),
    _route("GET", "/api/system/jobs", jobs.list_jobs, API),
    _route("GET", "/api/system/jobs/{jobId}", jobs.get_job, API),
    _route("POST", f"{PARTNER_OAUTH}/token", oauth.exchange_code, PUBLIC),
    _route("GET", f"{PARTNER_OAUTH}/getAccessToken", oauth.get_access_token, PUBLIC),
    _route("POST", f"{PARTNER_OAUTH}/getAccessToken", oauth.get_access_token, PUBLIC),
    _route("GET", "/eshops/{eshopId}/api-results/{name}", jobs.download_result, PUBLIC),
    _route("GET", f"{ESHOP_OAUTH}/authorize", oauth.authorize, PUBLIC),
    _route("POST", f"{ESHOP_OAUTH}/token", oauth.admin_token, PUBLIC),
    _route("GET", f"{ESHOP_OAUTH}/resource", oauth.resource, PUBLIC),
    _route("POST", f"{ESHOP_OAUTH}/resource", oauth.resource, PUBLIC),
    *(_route(method, template, handler, CONTROL) for method, template, handler in control.ROUTES),
]


class Router:
    """Turns a `Request` into a `Response`; one instance per fake, called from the server's threads."""

    def __init__(self, fake: FakeShoptet) -> None:
        self.fake = fake
        self.state = fake.state

    def dispatch(self, request: Request) -> Response:
        epoch = self.state.epoch
        route = self._match(request)
        if route is not None and route.kind == CONTROL:
            return self._call_public(route, request)
        if request.path.startswith("/api/"):
            request.eshop_id = self._eshop_of(request.headers.get("Shoptet-Access-Token", ""))
        fault = self._take_fault(request)
        if fault is not None and fault.status:
            response = _fault_response(fault, request.path)
        elif route is None:
            response = _not_found(request.path)
        elif route.kind == API:
            response = self._api(route, request, fault)
        else:
            if fault is not None:
                time.sleep(fault.delay)
            if self.state.epoch is not epoch:
                return Response.text(503, "<h1>503 The fake was reset</h1>")
            response = self._call_public(route, request)
        if fault is not None:
            response.headers.update(fault.headers)
        self._log(request, route, response, epoch)
        return response

    def _match(self, request: Request) -> Route | None:
        for route in ROUTES:
            match = route.pattern.match(request.path)
            if route.method == request.method and match:
                request.params = {name: unquote(value) for name, value in match.groupdict().items()}
                return route
        return None

    def _call_public(self, route: Route, request: Request) -> Response:
        try:
            response: Response = route.handler(self.fake, request)
            return response
        except Exception:  # noqa: BLE001 - a bug in the fake must be a loud 500, not a dead connection
            traceback.print_exc(file=sys.stderr)
            return Response.text(500, "<h1>500 Internal Server Error</h1>")

    # -- faults -------------------------------------------------------------------------------------------
    def _take_fault(self, request: Request) -> Fault | None:
        decoded = unquote(request.path)
        with self.state.lock:
            for fault in self.state.faults:
                if fault.method is not None and fault.method.upper() != request.method:
                    continue
                if not (re.search(fault.path_regex, request.path) or re.search(fault.path_regex, decoded)):
                    continue
                fault.times -= 1
                if fault.times <= 0:
                    self.state.faults.remove(fault)
                return fault
        return None

    # -- REST API -----------------------------------------------------------------------------------------
    def _api(self, route: Route, request: Request, fault: Fault | None) -> Response:
        token = request.headers.get("Shoptet-Access-Token", "")
        if not self._acquire(token, request.client_ip, request.eshop_id):
            message = "Too many concurrent requests; at most 3 per token and 50 per IP address."
            return _api_response(ApiError(429, "too-many-requests", message, "unknown", Retry_After="1"), "0/200")
        try:
            return self._api_call(route, request, token, fault.delay if fault else 0.0)
        finally:
            self._release(token, request.client_ip)

    def _api_call(self, route: Route, request: Request, token: str, delay: float) -> Response:
        """Authenticate and run the handler; `delay` is processing time (holding the concurrency slot and lock)."""
        filling = "0/200"
        write_key = None
        try:
            eshop = self._authenticate(token)
            filling = self._check_bucket(eshop)
            self._check_content_type(request)
            write_key = self._lock_write(request)
            time.sleep(delay)
            status, data = route.handler(self.fake, request, eshop)
            response = _api_response((status, data), filling)
            response.headers[BUCKET_HEADER] = self._pour(eshop, len(response.body))
            return response
        except ApiError as error:
            return _api_response(error, filling)
        except Exception:  # noqa: BLE001 - a bug in the fake must be a loud 500, not a dead connection
            traceback.print_exc(file=sys.stderr)
            return _api_response(ApiError(500, "internal-error", "Internal error of the fake."), filling)
        finally:
            if write_key is not None:
                with self.state.lock:
                    self.state.locked_writes.discard(write_key)

    def _eshop_of(self, token: str) -> int | None:
        with self.state.lock:
            api_token = self.state.api_tokens.get(token)
            return api_token.eshop_id if api_token else None

    def _authenticate(self, token: str) -> FakeEshop:
        if not token:
            message = "Missing access token. Please add `Shoptet-Access-Token` header to your request."
            raise ApiError(401, "missing-access-token", message)
        with self.state.lock:
            api_token = self.state.api_tokens.get(token)
            if api_token is None or api_token.revoked:
                raise ApiError(401, "invalid-token", "Invalid access token.")
            eshop = self.state.eshops[api_token.eshop_id]
            if api_token.expires_at <= self.fake.clock.time():
                raise ApiError(401, "expired-token", "Token is expired. Please ask for new one.")
            if eshop.status == SUSPENDED:
                raise ApiError(401, "invalid-token", "Addon installation is not approved.")
            if eshop.status == UNINSTALLED:
                raise ApiError(401, "invalid-token", "Invalid access token.")
            return eshop

    def _acquire(self, token: str, ip: str, eshop_id: int | None) -> bool:
        """Concurrency limits of Shoptet's nginx: `limit_conn per_token 3; limit_conn per_ip 50` (spec)."""
        with self.state.lock:
            per_token = self.state.in_flight_per_token[token] + 1 if token else 0
            per_ip = self.state.in_flight_per_ip[ip] + 1
            eshop = self.state.eshops.get(eshop_id) if eshop_id is not None else None
            if eshop is not None:  # attempts count too: the stat shows what the client tried
                eshop.stats.max_concurrent_per_token = max(eshop.stats.max_concurrent_per_token, per_token)
            if per_token > self.fake.max_requests_per_token or per_ip > self.fake.max_requests_per_ip:
                if eshop is not None:
                    eshop.stats.rate_limited += 1
                return False
            if token:
                self.state.in_flight_per_token[token] += 1
            self.state.in_flight_per_ip[ip] += 1
            return True

    def _release(self, token: str, ip: str) -> None:
        with self.state.lock:
            for counter, key in ((self.state.in_flight_per_token, token), (self.state.in_flight_per_ip, ip)):
                if key and counter[key] > 0:
                    counter[key] -= 1
                    if counter[key] == 0:
                        del counter[key]

    def _check_bucket(self, eshop: FakeEshop) -> str:
        """Leaky bucket per installation (spec, "Rate limiting"): a full one refuses with 429 before any work."""
        fake = self.fake
        with self.state.lock:
            self._leak(eshop)
            capacity = fake.bucket_capacity
            if fake.enforce_bucket and eshop.bucket_level + 1 > capacity:  # no room left for one more drop
                eshop.stats.bucket_refused += 1
                wait = (eshop.bucket_level + 1 - capacity) / max(fake.bucket_leak_per_second, 0.001)
                filling = f"{capacity}/{capacity}"
                # An HTTP date counts whole seconds: the first one at which the bucket has room again.
                retry_after = format_http_date(math.ceil(time.time() + max(wait, 1)))
                headers = {"Retry_After": retry_after, "X_RateLimit_Bucket_Filling": filling}
                raise ApiError(429, "too-many-requests", "Rate limit exceeded.", "unknown", **headers)
            return self._filling(eshop)

    def _pour(self, eshop: FakeEshop, answer_bytes: int) -> str:
        """Add the request's cost, measured after it ran: one drop, and one more per `bucket_bytes_per_drop`.

        Without `enforce_bucket` nothing is added and the header always reads empty: a bucket that never
        refuses must not make the client slow down either.
        """
        with self.state.lock:
            self._leak(eshop)
            if self.fake.enforce_bucket:
                eshop.bucket_level += 1 + answer_bytes // self.fake.bucket_bytes_per_drop
            eshop.stats.max_bucket_level = max(eshop.stats.max_bucket_level, eshop.bucket_level)
            return self._filling(eshop)

    def _leak(self, eshop: FakeEshop) -> None:
        now = self.fake.clock.time()
        leaked = (now - eshop.bucket_updated) * self.fake.bucket_leak_per_second
        eshop.bucket_level = max(0.0, eshop.bucket_level - leaked)
        eshop.bucket_updated = now

    def _filling(self, eshop: FakeEshop) -> str:
        return f"{min(math.ceil(eshop.bucket_level), self.fake.bucket_capacity)}/{self.fake.bucket_capacity}"

    def _check_content_type(self, request: Request) -> None:
        content_type = request.headers.get("Content-Type")
        if content_type is None or content_type.split(";")[0].strip() in self.fake.accepted_content_types:
            return
        raise ApiError(415, "unsupported-content-type", f'Content-Type "{content_type}" is not supported.')

    def _lock_write(self, request: Request) -> str | None:
        """An identical write request while the first one still runs gets 423 (spec, "Locks")."""
        if request.method == "GET":
            return None
        key = f"{request.method} {request.path}"
        with self.state.lock:
            if key in self.state.locked_writes:
                raise ApiError(423, "locked", "The same request is already being processed.", request.path)
            self.state.locked_writes.add(key)
        return key

    # -- request log --------------------------------------------------------------------------------------
    def _log(self, request: Request, route: Route | None, response: Response, epoch: object) -> None:
        key = f"{request.method} {route.template if route else request.path}"
        entry = (request.method, request.path, response.status)
        with self.state.lock:
            if self.state.epoch is not epoch:
                return
            self.state.requests[key] += 1
            self.state.log.append(entry)
            eshop = self.state.eshops.get(request.eshop_id) if request.eshop_id is not None else None
            if eshop is not None:
                eshop.stats.requests[key] += 1
                eshop.stats.log.append(entry)
                eshop.stats.queries.append((request.method, request.path, dict(request.query)))


def _api_response(result: tuple[int, Any] | ApiError, filling: str) -> Response:
    if isinstance(result, ApiError):
        payload, request_id = envelope(None, [result.item()])
        status, headers = result.status, result.headers
    else:
        status, data = result
        payload, request_id = envelope(data)
        headers = {}
    return Response.json(status, payload, {"X-Request-ID": request_id, BUCKET_HEADER: filling, **headers})


def _not_found(path: str) -> Response:
    if path.startswith("/api/"):
        return _api_response(
            ApiError(404, "page-not-found", "Endpoint not found (or not implemented by the fake)."), "0/200"
        )
    return Response.text(404, "<h1>404 Not Found</h1>")


def _fault_response(fault: Fault, path: str) -> Response:
    """The injected answer: the API envelope, an OAuth error, or the given body (dict → JSON, str → HTML).

    The fault's own headers are added by the caller (they also apply to pass-through answers).
    """
    time.sleep(fault.delay)
    body = fault.body
    if body is None and path.startswith("/api/"):
        error_code = fault.error_code or FAULT_ERROR_CODES.get(fault.status, "error")
        response = _api_response(ApiError(fault.status, error_code, fault.message), "0/200")
    elif body is None and path.startswith("/partner/"):
        response = oauth_error(fault.status, fault.error_code or "server_error", fault.message)
    elif body is None:
        response = Response.text(fault.status, f"<h1>{fault.status}</h1>")
    elif isinstance(body, (dict, list)):
        response = Response.json(fault.status, body)
    elif isinstance(body, str):
        response = Response.text(fault.status, body)
    else:
        response = Response(fault.status, body, {"Content-Type": "application/octet-stream"})
    if fault.status == 429:
        response.headers["Retry-After"] = "1"
    return response


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection, like nginx's `limit_conn` counts them

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(self.command, split.path, query, self.headers, body, self.client_address[0])
        response = self.server.router.dispatch(request)
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (e.g. an injected delay longer than its timeout)

    do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    router: Router
    verbose: bool = False


def make_server(host: str, port: int, router: Router, *, verbose: bool = False) -> ThreadingHTTPServer:
    server = _Server((host, port), _Handler)
    server.router = router
    server.verbose = verbose
    return server
