"""Typed errors for everything Shoptet can answer, built in one place from the HTTP response."""

from __future__ import annotations

import email.utils
import json
from datetime import UTC, datetime
from typing import Any, ClassVar

import requests


class ShoptetError(Exception):
    """Base of every error raised while talking to Shoptet."""


class TransportError(ShoptetError):
    """No usable answer: connection refused, timeout, or a body that is not the JSON we expect."""


class InstallationInactive(ShoptetError):
    """The installation is suspended, uninstalled or terminated: no API calls are made for it."""


class SlotTimeout(ShoptetError):
    """No concurrency slot for the e-shop's token became free in time."""


# ---------------------------------------------------------------------------
# Partner OAuth server (install code exchange, getAccessToken): `{"error", "error_description"}`
# ---------------------------------------------------------------------------


class OAuthError(ShoptetError):
    """The OAuth server refused the request."""

    def __init__(self, error: str, description: str = "", *, status: int | None = None) -> None:
        self.error = error
        self.description = description
        self.status = status
        super().__init__(f"{error}: {description}" if description else error)

    @classmethod
    def from_response(cls, response: requests.Response) -> OAuthError:
        body = _json_or_empty(response)
        error = str(body.get("error") or f"http_{response.status_code}")
        description = str(body.get("error_description") or body.get("message") or "")
        error_class = _OAUTH_ERRORS.get(error, OAuthError)
        return error_class(error, description, status=response.status_code)


class MaximumTokensReached(OAuthError):
    """Five API tokens are already valid for this OAuth token; one must expire first."""


class AddonNotInstalled(OAuthError):
    """The e-shop uninstalled the addon: its OAuth token no longer works."""


class AddonSuspended(OAuthError):
    """The addon is suspended for the e-shop: it stays installed, but API access is refused."""


_OAUTH_ERRORS: dict[str, type[OAuthError]] = {
    "maximum_tokens_reached": MaximumTokensReached,
    "addon_not_installed": AddonNotInstalled,
    "addon_suspended": AddonSuspended,
}


# ---------------------------------------------------------------------------
# REST API: the envelope's `errors[]` items carry `errorCode`, `message`, `instance`.
# ---------------------------------------------------------------------------


class APIError(ShoptetError):
    """Shoptet's REST API answered with an error status."""

    status: ClassVar[int | None] = None

    def __init__(
        self,
        message: str,
        *,
        http_status: int,
        error_code: str = "",
        instance: str = "",
        request_id: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.error_code = error_code
        self.instance = instance
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        parts = [f"HTTP {self.http_status}"]
        if self.error_code:
            parts.append(self.error_code)
        parts.append(self.message)
        if self.request_id:
            parts.append(f"(request {self.request_id})")
        return " ".join(parts)

    @classmethod
    def from_response(cls, response: requests.Response) -> APIError:
        body = _json_or_empty(response)
        first = _first_error(body)
        error_class = _API_ERRORS.get(response.status_code)
        if error_class is None:
            error_class = ServerError if response.status_code >= 500 else APIError
        return error_class(
            str(first.get("message") or response.reason or "error"),
            http_status=response.status_code,
            error_code=str(first.get("errorCode") or ""),
            instance=str(first.get("instance") or ""),
            request_id=response.headers.get("X-Request-ID", ""),
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )


class BadRequest(APIError):
    status = 400


class Unauthorized(APIError):
    status = 401

    @property
    def is_expired_token(self) -> bool:
        return self.error_code == "expired-token"


class Forbidden(APIError):
    status = 403


class NotFound(APIError):
    status = 404


class Conflict(APIError):
    status = 409


class PayloadTooLarge(APIError):
    status = 413


class Unprocessable(APIError):
    status = 422


class Locked(APIError):
    status = 423


class RateLimited(APIError):
    status = 429


class ServerError(APIError):
    status = 500


class ServiceUnavailable(ServerError):
    status = 503


_API_ERRORS: dict[int, type[APIError]] = {
    error_class.status: error_class
    for error_class in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PayloadTooLarge,
        Unprocessable,
        Locked,
        RateLimited,
        ServerError,
        ServiceUnavailable,
    )
    if error_class.status is not None
}

# What a task may retry later: the same call can succeed without anybody changing anything.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    TransportError,
    SlotTimeout,
    Locked,
    RateLimited,
    ServerError,
    MaximumTokensReached,
)


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` is either delay seconds or an HTTP date (Shoptet's rate limiter sends the date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def _json_or_empty(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def _first_error(body: dict[str, Any]) -> dict[str, Any]:
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return errors[0]
    return {}
