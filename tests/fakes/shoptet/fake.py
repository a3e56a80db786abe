"""`FakeShoptet`: the public face of the fake (server lifecycle, e-shops, what Shoptet does on its own)."""

from __future__ import annotations

import copy
import ipaddress
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlencode

from . import api, data, documents, jobs, oauth, schema, webhooks
from .clock import Clock
from .server import Router, make_server
from .state import INSTALLED, SUSPENDED, UNINSTALLED, FakeEshop, Fault, State

# Instance overrides of these class attributes are dropped by `reset()`.
SETTINGS = (
    "invalid_token_status",
    "not_installed_status",
    "suspended_status",
    "max_tokens_status",
    "max_api_tokens",
    "max_requests_per_token",
    "max_requests_per_ip",
    "install_code_ttl",
    "install_deadline",
    "webhook_timeout",
    "job_duration",
    "job_detail_limit",
    "result_validity",
    "never_finish_jobs",
    "suppress_job_webhook",
    "changes_retention_days",
    "enforce_bucket",
    "bucket_capacity",
    "bucket_leak_per_second",
    "bucket_bytes_per_drop",
    "accepted_content_types",
    "default_install_url",
)


class FakeShoptet:
    """A Shoptet look-alike on loopback: partner OAuth server, REST API, webhooks, async jobs and result files.

    Use as a context manager, or `start()` / `stop()`. The socket is bound on construction, so `url` is known
    before `start()`.
    """

    # getAccessToken error statuses are not documented; the platform must act on the `error` body.
    invalid_token_status = 401
    not_installed_status = 401
    suspended_status = 403
    max_tokens_status = 429  # the official SDK's test fixture answers maximum_tokens_reached with 429
    max_api_tokens = 5  # "It is possible to request a maximum of 5 valid tokens." (spec)
    max_requests_per_token = 3  # nginx limit_conn per_token 3 (spec, "Rate limiting")
    max_requests_per_ip = 50  # nginx limit_conn per_ip 50
    install_code_ttl = 300.0
    install_deadline = 5.0  # an install answered after more than 5 s failed (official install example)
    webhook_timeout = 4.0
    job_duration = 0.5
    job_detail_limit = 10  # more detail calls on an unprocessed job → 403 (spec)
    result_validity = 24 * 3600
    never_finish_jobs = False
    suppress_job_webhook = False
    changes_retention_days = 30
    # When True, calls fill a leaky bucket, the header reports it, and a full one answers 429 with an HTTP-date
    # Retry-After; when False the header always reads empty.
    enforce_bucket = False
    bucket_capacity = 200
    bucket_leak_per_second = 10.0
    bucket_bytes_per_drop = 20_000  # "more data = more drops": a large answer costs more than one drop
    accepted_content_types: tuple[str, ...] = ("application/json", "application/vnd.shoptet.v1.0")
    default_install_url: str | None = None  # used by the control API when no installUrl is given

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id: str = "demo-client",
        client_secret: str = "demo-secret",
        token_ttl: int = 1800,
        *,
        verbose: bool = False,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self._initial_token_ttl = token_ttl
        self.clock = Clock()
        self.state = State()
        self._server = make_server(host, port, Router(self), verbose=verbose)
        self._thread: threading.Thread | None = None
        self._timers: list[threading.Timer] = []
        self._url = f"http://{_public_host(host)}:{self._server.server_address[1]}"

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> FakeShoptet:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-shoptet", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._cancel_timers()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FakeShoptet:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget all e-shops, tokens, faults, jobs and stats; undo `advance_time`, `token_ttl` changes and
        instance overrides of the class settings."""
        self._cancel_timers()
        with self.state.lock:
            fresh = State(lock=self.state.lock)
            for field in fields(State):
                setattr(self.state, field.name, getattr(fresh, field.name))
        self.clock.reset()
        self.token_ttl = self._initial_token_ttl
        for name in SETTINGS:
            self.__dict__.pop(name, None)

    @property
    def url(self) -> str:
        """e.g. `http://127.0.0.1:54321`."""
        return self._url

    @property
    def partner_url(self) -> str:
        """Base of the partner e-shop: `<partner_url>/action/ApiOAuthServer/token` and `/getAccessToken`."""
        return f"{self._url}/partner"

    @property
    def api_url(self) -> str:
        """REST API base; paths are `/api/...`."""
        return self._url

    def schedule(self, delay: float, function: Callable[..., None], *args: Any) -> None:
        """Run `function(self, *args)` after `delay` seconds on a daemon timer (cancelled by stop/reset)."""
        timer = threading.Timer(delay, function, args=(self, *args))
        timer.daemon = True
        with self.state.lock:
            self._timers = [timer for timer in self._timers if timer.is_alive()]
            self._timers.append(timer)
        timer.start()

    def _cancel_timers(self) -> None:
        with self.state.lock:
            timers, self._timers = self._timers, []
        for timer in timers:
            timer.cancel()

    # -- e-shops ------------------------------------------------------------------------------------------
    def add_eshop(
        self,
        eshop_id: int,
        *,
        orders: int = 0,
        invoices: int = 0,
        name: str | None = None,
        email: str | None = None,
        seed: int | None = None,
        now: datetime | None = None,
    ) -> FakeEshop:
        """A not yet installed e-shop with generated data; the same seed and `now` give the same data.

        Orders are spread over the 45 days before `now` (so some are older than the 30-day `/changes`
        window); invoices belong to a sample of them, extra invoices have no order.
        """
        now = (now or self.clock.now()).replace(microsecond=0)
        identity = data.EshopIdentity(
            eshop_id,
            name or f"E-shop {eshop_id}",
            f"{self._url}/eshops/{eshop_id}/",
            email or f"info@eshop{eshop_id}.cz",
        )
        generator = data.Generator(identity, eshop_id if seed is None else seed, now)
        eshop = FakeEshop(eshop_id, identity.name, identity.url, identity.email, secrets.token_hex(16), generator)
        with self.state.lock:
            if eshop_id in self.state.eshops:
                raise ValueError(f"e-shop {eshop_id} already exists")
            self.state.eshops[eshop_id] = eshop
            _seed_documents(eshop, orders, invoices, now)
        return eshop

    def eshop(self, eshop_id: int) -> FakeEshop:
        return self.state.eshops[eshop_id]

    @property
    def eshops(self) -> dict[int, FakeEshop]:
        """All e-shops by id (the live objects; hold `state.lock` when changing them from another thread)."""
        return self.state.eshops

    def order_detail(self, eshop_id: int, code: str, include: tuple[str, ...] = ()) -> dict[str, Any]:
        """What `GET /api/orders/{code}` answers in `data.order` (a copy)."""
        with self.state.lock:
            return documents.order_view(self.eshop(eshop_id).orders[code], {name.lower() for name in include})

    def invoice_detail(self, eshop_id: int, code: str) -> dict[str, Any]:
        with self.state.lock:
            return documents.invoice_view(self.eshop(eshop_id).invoices[code], set())

    # -- install and the installation's lifecycle ---------------------------------------------------------
    def issue_install_code(self, eshop_id: int, redirect_uri: str | None = None) -> str:
        """A single-use install code, valid 5 minutes; bound to `redirect_uri` when one is given."""
        with self.state.lock:
            return oauth.issue_install_code(self, self.eshop(eshop_id), redirect_uri)

    def issue_oauth_token(self, eshop_id: int) -> str:
        """Install without the callback: the e-shop becomes installed and the new OAuth token is returned."""
        with self.state.lock:
            return oauth.issue_oauth_token(self, self.eshop(eshop_id))

    def issue_api_token(self, eshop_id: int) -> str:
        """An API access token for the current installation, without calling getAccessToken."""
        with self.state.lock:
            eshop = self.eshop(eshop_id)
            if eshop.oauth_token is None:
                raise RuntimeError(f"e-shop {eshop_id} is not installed")
            return oauth.issue_api_token(self, eshop, eshop.oauth_token).value

    def issue_admin_code(
        self, eshop_id: int, redirect_uri: str | None = None, *, email: str | None = None, name: str | None = None
    ) -> str:
        """A `basic_eshop` code of the e-shop's OAuth server, as Shoptet puts into `#OAUTH_CODE#`."""
        with self.state.lock:
            return oauth.issue_admin_code(self, self.eshop(eshop_id), redirect_uri, email, name)

    def install(self, eshop_id: int, install_url: str, timeout: float = 10) -> tuple[int, str]:
        """Do what Shoptet does on install: GET `install_url?code=...` and judge the answer.

        The code is bound to `install_url` without its query (the `redirect_uri` to send back). The install
        fails unless the platform answers 200 within `install_deadline` seconds; then the OAuth token it
        obtained is revoked again. Returns the platform's (status, body); status 0 if it was unreachable.
        """
        code = self.issue_install_code(eshop_id, oauth.without_query(install_url))
        separator = "&" if "?" in install_url else "?"
        started = time.monotonic()
        status, body = _get(f"{install_url}{separator}{urlencode({'code': code})}", timeout)
        if status != 200 or time.monotonic() - started > self.install_deadline:
            self._roll_back_install(eshop_id, code)
        return status, body

    def _roll_back_install(self, eshop_id: int, code: str) -> None:
        """A failed install leaves no working installation, even if the code was exchanged: getAccessToken
        with the token obtained answers `addon_not_installed`."""
        with self.state.lock:
            eshop = self.eshop(eshop_id)
            token = self.state.install_codes[code].oauth_token
            if token is not None and token == eshop.oauth_token:
                eshop.status = UNINSTALLED
                oauth.revoke_installation(eshop, keep_oauth_token=True)

    def uninstall(
        self, eshop_id: int, *, send_system_webhook: bool = True, keep_token_valid_for_probe: bool = False
    ) -> int | None:
        """API tokens and webhook registrations are gone; the OAuth token is revoked (getAccessToken →
        `invalid_token`) unless `keep_token_valid_for_probe`, then getAccessToken → `addon_not_installed`.
        Returns the status of the `addon:uninstall` delivery, None if nothing was sent."""
        return self._end_installation(eshop_id, "addon:uninstall", send_system_webhook, keep_token_valid_for_probe)

    def terminate(
        self, eshop_id: int, *, send_system_webhook: bool = True, keep_token_valid_for_probe: bool = False
    ) -> int | None:
        """Termination by the merchant or Shoptet staff; treated like an uninstall."""
        return self._end_installation(eshop_id, "addon:terminate", send_system_webhook, keep_token_valid_for_probe)

    def suspend(self, eshop_id: int, *, send_system_webhook: bool = True) -> int | None:
        """Still installed, but getAccessToken → `addon_suspended` and the API → 401 invalid-token."""
        with self.state.lock:
            self.eshop(eshop_id).status = SUSPENDED
        return self._system_event(eshop_id, "addon:suspend", send_system_webhook)

    def approve(self, eshop_id: int, *, send_system_webhook: bool = True) -> int | None:
        with self.state.lock:
            self.eshop(eshop_id).status = INSTALLED
        return self._system_event(eshop_id, "addon:approve", send_system_webhook)

    def _end_installation(self, eshop_id: int, event: str, send: bool, keep_oauth_token: bool) -> int | None:
        with self.state.lock:
            eshop = self.eshop(eshop_id)
            eshop.status = UNINSTALLED
            oauth.revoke_installation(eshop, keep_oauth_token=keep_oauth_token)
        status = self._system_event(eshop_id, event, send)  # signed with the key the installation had
        with self.state.lock:
            eshop.webhooks.clear()  # registrations belong to the installation
        return status

    def _system_event(self, eshop_id: int, event: str, send: bool) -> int | None:
        """Returns the receiver's HTTP status, or None when nothing was sent (no URL configured)."""
        if not send or self.state.system_webhook_url is None:
            return None
        return webhooks.deliver(self, eshop_id, event, str(eshop_id))

    def set_system_webhook_url(self, url: str | None) -> None:
        """Where `addon:*` events go (set in the addon's settings in partner admin, not via the API)."""
        with self.state.lock:
            self.state.system_webhook_url = url

    def expire_api_tokens(self, eshop_id: int) -> None:
        """All current API tokens expire now: the API answers 401 `expired-token` and the 5-token cap frees up."""
        with self.state.lock:
            now = self.clock.time()
            for token in self.eshop(eshop_id).valid_api_tokens(now):
                token.expires_at = now - 1

    def advance_time(self, seconds: float) -> None:
        """Move the fake's clock forward (token expiry, result validity, `/changes` window, timestamps)."""
        self.clock.advance(seconds)

    # -- faults and stats ---------------------------------------------------------------------------------
    def add_fault(
        self,
        method: str | None,
        path_regex: str,
        status: int,
        *,
        times: int = 1,
        body: dict[str, Any] | list[Any] | str | bytes | None = None,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
        error_code: str | None = None,
        message: str = "Injected fault.",
    ) -> Fault:
        """The next `times` requests matching method and `path_regex` (searched in the raw and the decoded
        path) get `status` after `delay` seconds; with `status=0` they pass through normally after sleeping
        `delay` seconds (holding their concurrency slot, like a slow answer).

        Without `body`, API paths answer the error envelope with `error_code` (default by status) and
        `message`, partner OAuth paths `{"error": error_code or "server_error", "error_description": message}`.
        A str body is sent as HTML, bytes as-is, a dict/list as JSON. `headers` are added to the answer,
        also to a passed-through one; 429 gets `Retry-After: 1` unless `headers` say otherwise.
        """
        re.compile(path_regex)
        fault = Fault(
            method=method.upper() if method else None,
            path_regex=path_regex,
            status=status,
            times=times,
            body=body,
            headers=dict(headers or {}),
            delay=delay,
            error_code=error_code,
            message=message,
        )
        with self.state.lock:
            self.state.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.state.lock:
            self.state.faults.clear()

    def request_count(self, method: str | None, path_regex: str, *, methods_other_than_get: bool = False) -> int:
        """Requests so far (all e-shops, faults included) whose method matches (None: any; with
        `methods_other_than_get`, writes only) and whose raw or decoded path matches `path_regex` (searched)."""
        pattern = re.compile(path_regex)
        with self.state.lock:
            return sum(
                1
                for logged_method, path, _ in self.state.log
                if (method is None or logged_method == method.upper())
                and not (methods_other_than_get and logged_method == "GET")
                and (pattern.search(path) or pattern.search(unquote(path)))
            )

    def stats(self, eshop_id: int | None = None) -> dict[str, Any]:
        """Per e-shop: tokens_minted, valid_tokens, max_valid_tokens, max_concurrent_per_token (attempted
        concurrency, 429s included), rate_limited, bucket_refused (429s of a full bucket), max_bucket_level,
        webhooks_sent, requests {"GET /api/orders/{code}": n}, log [(method, raw path, status)], status.
        Without an e-shop: requests and log of the whole fake."""
        with self.state.lock:
            if eshop_id is None:
                return {"requests": dict(self.state.requests), "log": list(self.state.log)}
            eshop = self.eshop(eshop_id)
            valid = len(eshop.valid_api_tokens(self.clock.time()))
            return {**eshop.stats.to_dict(), "valid_tokens": valid, "status": eshop.status}

    # -- webhooks -----------------------------------------------------------------------------------------
    def send_webhook(
        self,
        eshop_id: int,
        event: str,
        instance: str,
        *,
        signature: str | None = None,
        body_override: bytes | None = None,
        url: str | None = None,
    ) -> int:
        """POST a signed notification to the URL registered for `event` (or `url`); return the HTTP status.

        `signature` and `body_override` replace the computed signature / body, to test rejection.
        Raises LookupError when no URL is known for the event.
        """
        return webhooks.deliver(
            self, eshop_id, event, instance, url=url, signature=signature, body_override=body_override
        )

    def resend_failed_webhooks(self, eshop_id: int) -> list[int]:
        """Retry every failed notification that has attempts left (same body and signature)."""
        with self.state.lock:
            pending = [n for n in self.eshop(eshop_id).notifications if n.status == "failed" and n.active]
        return [webhooks.attempt(self, eshop_id, notification) for notification in pending]

    def register_webhook(self, eshop_id: int, event: str, url: str) -> dict[str, Any]:
        """Register a webhook as if the addon had done it (no rule checks); returns it in the API's shape."""
        with self.state.lock:
            return api.add_webhook(self, self.eshop(eshop_id), event, url)

    def _notify(self, eshop_id: int, events: list[str], instance: str, send: bool) -> None:
        if send:
            for event in events:
                webhooks.deliver_if_registered(self, eshop_id, event, instance)

    # -- data changes -------------------------------------------------------------------------------------
    def create_order(
        self, eshop_id: int, *, code: str | None = None, webhook: bool = True, nulls: schema.Nulls | None = None
    ) -> str:
        """A new order created now (with `code` if given); sends `order:create` when registered.

        With `nulls`, every field that Shoptet's schema marks nullable is null (see `schema.nulled`).
        """
        with self.state.lock:
            order = documents.add_order(self.eshop(eshop_id), self.clock.now(), code=code, nulls=nulls)
        created: str = order["code"]
        self._notify(eshop_id, ["order:create"], created, webhook)
        return created

    def update_order(self, eshop_id: int, code: str, *, webhook: bool = True, **changes: Any) -> dict[str, Any]:
        """Set top-level fields (`paid=True`, `status=-4` or `status={...}`, `email=...`), bump changeTime and
        send `order:update` (plus `order:paid` / `order:cancel` when they apply). Returns the new detail."""
        with self.state.lock:
            events = documents.update_order(self.eshop(eshop_id), code, changes, self.clock.now())
            detail = copy.deepcopy(self.eshop(eshop_id).orders[code])
        self._notify(eshop_id, events, code, webhook)
        return detail

    def delete_order(self, eshop_id: int, code: str, *, webhook: bool = True) -> None:
        with self.state.lock:
            documents.delete(documents.ORDERS, self.eshop(eshop_id), code, self.clock.now())
        self._notify(eshop_id, ["order:delete"], code, webhook)

    def create_invoice(
        self,
        eshop_id: int,
        order_code: str | None = None,
        *,
        webhook: bool = True,
        nulls: schema.Nulls | None = None,
    ) -> str:
        """A new invoice for `order_code` (or without an order); sends `invoice:create` when registered.

        With `nulls`, every field that Shoptet's schema marks nullable is null (see `schema.nulled`).
        """
        with self.state.lock:
            invoice = documents.add_invoice(self.eshop(eshop_id), order_code, self.clock.now(), nulls=nulls)
        created: str = invoice["code"]
        self._notify(eshop_id, ["invoice:create"], created, webhook)
        return created

    def update_invoice(self, eshop_id: int, code: str, *, webhook: bool = True, **changes: Any) -> dict[str, Any]:
        with self.state.lock:
            documents.update_invoice(self.eshop(eshop_id), code, changes, self.clock.now())
            detail = copy.deepcopy(self.eshop(eshop_id).invoices[code])
        self._notify(eshop_id, ["invoice:update"], code, webhook)
        return detail

    def delete_invoice(self, eshop_id: int, code: str, *, webhook: bool = True) -> None:
        with self.state.lock:
            documents.delete(documents.INVOICES, self.eshop(eshop_id), code, self.clock.now())
        self._notify(eshop_id, ["invoice:delete"], code, webhook)

    # -- jobs ---------------------------------------------------------------------------------------------
    def fail_next_job(self, eshop_id: int) -> None:
        """The next job of this e-shop ends `failed` (no result file; `job:finished` is still sent)."""
        with self.state.lock:
            self.eshop(eshop_id).fail_next_job = True

    def finish_job(self, eshop_id: int, job_id: str, *, failed: bool = False) -> None:
        """Finish an unfinished job right now (e.g. with `never_finish_jobs` set)."""
        jobs.finish(self, eshop_id, job_id, failed=failed)


def _public_host(host: str) -> str:
    """A wildcard bind address (0.0.0.0, ::) is reachable as 127.0.0.1."""
    try:
        unspecified = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        unspecified = not host
    return "127.0.0.1" if unspecified else host


def _seed_documents(eshop: FakeEshop, orders: int, invoices: int, now: datetime) -> None:
    rng = eshop.generator.rng
    span = timedelta(days=45)
    for index in range(orders):
        created = now - span * (orders - index) / orders
        changed = min(created + timedelta(hours=rng.randint(1, 72)), now) if rng.random() < 0.3 else None
        documents.add_order(eshop, created.replace(microsecond=0), changed and changed.replace(microsecond=0))
    linked = sorted(
        rng.sample(list(eshop.orders), min(invoices, orders)), key=lambda c: eshop.orders[c]["creationTime"]
    )
    for code in linked:
        created = datetime.strptime(eshop.orders[code]["creationTime"], "%Y-%m-%dT%H:%M:%S%z")
        documents.add_invoice(eshop, code, min(created + timedelta(hours=2), now))
    for _ in range(invoices - len(linked)):
        documents.add_invoice(eshop, None, now - timedelta(hours=rng.randint(1, 24 * 40)))


def _get(url: str, timeout: float) -> tuple[int, str]:
    """GET without following redirects (the install URL must be the exact registered one)."""
    opener = urllib.request.build_opener(webhooks.NoRedirect)
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        return 0, str(error)
