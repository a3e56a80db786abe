"""Per-installation client for Shoptet's REST API.

Every call: an API token from the shared cache, one of the e-shop's three request slots, a timeout, the
envelope unwrapped, errors typed. Retries follow Shoptet's status table: 401 `expired-token` mints once
and retries once, 429 waits for `Retry-After`, 423/500/503 and connection errors back off with jitter;
a write is retried only when Shoptet cannot have applied it (423, 429, connection refused) or when the
caller says it is idempotent. A request waits first while the e-shop's leaky bucket is nearly full
(`shoptet_api.bucket`), so a busy e-shop slows down before Shoptet answers 429.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import requests
import urllib3
from django.conf import settings

from config import metrics
from config.logs import bound_eshop
from config.retries import Backoff
from shoptet_api import bucket, tokens
from shoptet_api.concurrency import request_slot
from shoptet_api.errors import (
    APIError,
    InstallationInactive,
    Locked,
    RateLimited,
    ServerError,
    TransportError,
    Unauthorized,
)
from shoptet_api.tenant import Tenant

logger = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_ATTEMPTS = 5
# 423, 5xx and connection errors inside one call: half a second, one, two … at most 30 s.
BACKOFF = Backoff(base=0.5, cap=30.0)
# A Retry-After longer than this is not waited for inside a request; the task retries later instead.
MAX_RETRY_AFTER_SECONDS = 60.0

_deprecations_logged: set[str] = set()
# Path segments that name an endpoint (`orders`, `renew-signature-key`); anything else is an id or a code.
_API_WORD = re.compile(r"(|[a-z][a-z-]*)")


def shoptet_time(moment: datetime) -> str:
    """Shoptet's date-time format for query parameters (requests sends the `+` as `%2B`)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S%z")


def segment(value: str) -> str:
    """Quote one path segment: order and invoice codes may contain `/`."""
    return quote(str(value), safe="")


class ShoptetClient:
    """Shoptet's REST API as one installation sees it."""

    def __init__(
        self,
        installation: Tenant,
        *,
        session: requests.Session | None = None,
        timeout: float | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        language: str | None = None,
    ) -> None:
        self.installation = installation
        # Shoptet answers in this language on every endpoint when the e-shop has the foreign-languages module.
        self.language = language
        self.session = session or requests.Session()
        self.timeout = timeout or settings.SHOPTET_API_TIMEOUT
        self.max_attempts = max_attempts
        self.base_url = settings.SHOPTET_API_URL

    # ------------------------------------------------------------------
    # Transport
    # ------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Call the API and return the envelope's `data`."""
        with bound_eshop(self.installation.eshop_id):
            return self._request(method.upper(), path, params=params, json=json, idempotent=idempotent)

    def _request(
        self, method: str, path: str, *, params: dict[str, Any] | None, json: Any, idempotent: bool | None
    ) -> Any:
        retry_unsafe_failures = method in SAFE_METHODS if idempotent is None else idempotent
        token_renewed = False
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._send_once(method, path, params=params, json=json)
            except Unauthorized as error:
                if not error.is_expired_token or token_renewed:
                    raise
                token_renewed = True  # Shoptet: drop the expired token, get a new one once, retry once.
            except (RateLimited, Locked) as error:
                # Both mean Shoptet refused before doing anything, so even a write may go again.
                self._pause_or_raise(error, attempt, error.retry_after)
            except ServerError as error:
                if not retry_unsafe_failures:
                    raise
                self._pause_or_raise(error, attempt, error.retry_after)
            except _ConnectFailed as error:
                self._pause_or_raise(error.transport_error, attempt, None)
            except TransportError as error:
                if not retry_unsafe_failures:
                    raise
                self._pause_or_raise(error, attempt, None)

    def _pause_or_raise(self, error: Exception, attempt: int, retry_after: float | None) -> None:
        if attempt >= self.max_attempts:
            raise error
        if retry_after is not None:
            if retry_after > MAX_RETRY_AFTER_SECONDS:
                raise error
            pause = retry_after + random.uniform(0, 0.25)  # noqa: S311 - jitter
        else:
            pause = BACKOFF.seconds(attempt - 1)
        logger.warning(
            "shoptet api retry eshop_id=%s attempt=%s pause=%.2fs error=%s",
            self.installation.eshop_id,
            attempt,
            pause,
            error,
        )
        time.sleep(pause)

    def _send_once(self, method: str, path: str, *, params: dict[str, Any] | None, json: Any) -> Any:
        if not self.installation.is_active:
            raise InstallationInactive(
                f"e-shop {self.installation.eshop_id} is {self.installation.status}: no API calls for it"
            )
        token = tokens.get_access_token(self.installation)
        headers = {
            "Shoptet-Access-Token": token,
            "Content-Type": settings.SHOPTET_CONTENT_TYPE,
            "Accept": "application/json",
        }
        if self.language:
            params = {**(params or {}), "language": self.language}
        started = time.monotonic()
        self._wait_for_bucket()
        with request_slot(self.installation):
            sent = time.monotonic()
            response = self._http(method, path, params=params, json=json, headers=headers)
            # Shoptet's own time, without the wait for a request slot.
            exchange_seconds = time.monotonic() - sent
        bucket.record(self.installation.eshop_id, response.headers.get(bucket.HEADER))
        elapsed_ms = (time.monotonic() - started) * 1000
        request_id = response.headers.get("X-Request-ID", "")
        logger.info(
            "shoptet api eshop_id=%s method=%s path=%s status=%s ms=%.0f request_id=%s",
            self.installation.eshop_id,
            method,
            path,
            response.status_code,
            elapsed_ms,
            request_id,
        )
        self._note_deprecation(method, path, response)
        metrics.observe_api_call(
            eshop_id=self.installation.eshop_id,
            method=method,
            endpoint=_path_template(path),
            status=response.status_code,
            seconds=exchange_seconds,
        )
        if response.status_code >= 400:
            error = APIError.from_response(response)
            if isinstance(error, Unauthorized) and error.is_expired_token:
                tokens.discard_access_token(self.installation, token)
            raise error
        return self._data(response)

    def _wait_for_bucket(self) -> None:
        """Pause while the e-shop's bucket, as the last answer to any process left it, is nearly full."""
        eshop_id = self.installation.eshop_id
        waited = 0.0
        while waited < bucket.MAX_PAUSE_SECONDS and (pause := bucket.pause_before_request(eshop_id)) > 0:
            if not waited:
                metrics.increment("shoptet_api_bucket_pauses")
                logger.info("shoptet api bucket nearly full eshop_id=%s pause=%.2fs", eshop_id, pause)
            time.sleep(pause)
            waited += pause

    def _http(
        self, method: str, path: str, *, params: dict[str, Any] | None, json: Any, headers: dict[str, str]
    ) -> requests.Response:
        try:
            return self.session.request(
                method, self.base_url + path, params=params, json=json, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as error:
            failure = TransportError(f"{method} {path}: {type(error).__name__}")
            if _never_sent(error):
                raise _ConnectFailed(failure) from error
            raise failure from error

    @staticmethod
    def _data(response: requests.Response) -> Any:
        if not response.content:
            return None
        try:
            body = response.json()
        except ValueError as error:
            raise TransportError(
                f"Shoptet answered HTTP {response.status_code} with a body that is not JSON"
            ) from error
        if not isinstance(body, dict):
            raise TransportError("Shoptet answered with JSON that is not the API envelope")
        return body.get("data")

    def _note_deprecation(self, method: str, path: str, response: requests.Response) -> None:
        deprecated = response.headers.get("X-Shoptet-Deprecated")
        sunset = response.headers.get("Sunset")
        if not (deprecated or sunset):
            return
        endpoint = f"{method} {_path_template(path)}"
        if endpoint in _deprecations_logged:
            return
        _deprecations_logged.add(endpoint)
        logger.warning("shoptet api deprecation endpoint=%s deprecated=%s sunset=%s", endpoint, deprecated, sunset)

    # ------------------------------------------------------------------
    # Paging
    # ------------------------------------------------------------------

    def paginate(
        self, path: str, *, key: str, params: dict[str, Any] | None = None, items_per_page: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield every item of a paged list, page after page, in the style of stripe's auto_paging_iter."""
        page = 1
        while True:
            query = dict(params or {}, page=page)
            if items_per_page:
                query["itemsPerPage"] = items_per_page
            data = self.request("GET", path, params=query) or {}
            yield from data.get(key) or []
            paginator = data.get("paginator") or {}
            if page >= int(paginator.get("pageCount") or 1):
                return
            page += 1

    # ------------------------------------------------------------------
    # Endpoints
    # ------------------------------------------------------------------

    def get_eshop(self, *, include: list[str] | None = None) -> dict[str, Any]:
        # Reference: getEshopInfo (GET /api/eshop)
        params = {"include": ",".join(include)} if include else None
        return self.request("GET", "/api/eshop", params=params) or {}

    def list_webhooks(self) -> list[dict[str, Any]]:
        # Reference: getOverviewOfRegisteredWebhooks (GET /api/webhooks)
        return list(self.paginate("/api/webhooks", key="webhooks", items_per_page=500))

    def create_webhooks(self, registrations: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Reference: registerNewWebhook (POST /api/webhooks), at most 50 items per call
        data = self.request("POST", "/api/webhooks", json={"data": registrations}) or {}
        return list(data.get("webhooks") or [])

    def update_webhook(self, webhook_id: int, *, url: str) -> dict[str, Any]:
        # Reference: updateExistingWebhook (PATCH /api/webhooks/{id})
        data = self.request("PATCH", f"/api/webhooks/{webhook_id}", json={"data": {"url": url}}, idempotent=True)
        return dict((data or {}).get("webhook") or {})

    def delete_webhook(self, webhook_id: int) -> None:
        # Reference: deleteRegisteredWebhook (DELETE /api/webhooks/{id})
        self.request("DELETE", f"/api/webhooks/{webhook_id}", idempotent=True)

    def renew_signature_key(self) -> str:
        # Reference: generateWebhookSignatureKey (POST /api/webhooks/renew-signature-key); every call replaces the key
        data = self.request("POST", "/api/webhooks/renew-signature-key") or {}
        key = data.get("signatureKey")
        if not isinstance(key, str) or not key:
            raise TransportError("renew-signature-key answered without a signatureKey")
        return key

    def get_order(self, code: str, *, include: list[str] | None = None) -> dict[str, Any]:
        # Reference: getOrderDetail (GET /api/orders/{code})
        params = {"include": ",".join(include)} if include else None
        return dict((self.request("GET", f"/api/orders/{segment(code)}", params=params) or {}).get("order") or {})

    def get_invoice(self, code: str) -> dict[str, Any]:
        # Reference: getInvoiceDetail (GET /api/invoices/{code})
        return dict((self.request("GET", f"/api/invoices/{segment(code)}") or {}).get("invoice") or {})


class _ConnectFailed(Exception):
    """Internal marker: the request never reached Shoptet, so retrying cannot apply it twice."""

    def __init__(self, transport_error: TransportError) -> None:
        super().__init__(str(transport_error))
        self.transport_error = transport_error


def _never_sent(error: requests.RequestException) -> bool:
    """True when the connection was never made (refused, DNS, connect timeout): nothing reached Shoptet."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(error, requests.ConnectionError) and isinstance(reason, urllib3.exceptions.NewConnectionError)


def _path_template(path: str) -> str:
    """`/api/orders/2026%2F0001` → `/api/orders/{id}`: one label per endpoint, not one per order."""
    parts = path.split("?")[0].split("/")
    return "/".join(part if _API_WORD.fullmatch(part) else "{id}" for part in parts)
