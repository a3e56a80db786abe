"""OAuth tokens: the install code exchange and the short-lived API access tokens shared by every worker.

Shoptet allows at most 5 valid API tokens per installation, each valid 30 minutes. One token is cached
per installation in the shared cache (Redis in production, the database in embedded mode), encrypted
like every other secret, and minted by one process at a time under a lock; everybody else waits for it.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings
from django.core.cache import cache

from config import crypto, metrics
from config.logs import bound_eshop
from shoptet_api import oauth
from shoptet_api.errors import AddonNotInstalled, AddonSuspended, MaximumTokensReached, OAuthError, TransportError
from shoptet_api.ids import InvalidEshopId, parse_eshop_id
from shoptet_api.tenant import Tenant, addon_refused

logger = logging.getLogger(__name__)

# A token is replaced this long before Shoptet's expiry, so that no request leaves with a token about to
# die: a fifth of its lifetime, at most 5 minutes. A fixed margin longer than a short lifetime (Shoptet
# may hand out any `expires_in`) would make every call mint a token.
REFRESH_MARGIN_SHARE = 0.2
REFRESH_MARGIN_CAP_SECONDS = 300.0
# A token this close to its expiry is not handed out even while the e-shop is at its 5-token cap.
LAST_USE_SECONDS = 0.5
# At the cap (`maximum_tokens_reached`) wait this long at most for a token: the cached one, another worker's
# new one, or a free slot once the oldest token expires. Then the caller's task retries.
WAIT_AT_CAP_SECONDS = 60.0
MINT_TIMEOUT_SECONDS = 10.0
# The lock outlives a mint that hangs until its timeout; a dead minter frees it when it expires.
MINT_LOCK_SECONDS = int(MINT_TIMEOUT_SECONDS) + 5
# A waiter outlasts a minter that sits at the token cap for its whole bounded wait.
WAIT_FOR_MINT_SECONDS = WAIT_AT_CAP_SECONDS + MINT_LOCK_SECONDS + 5


@dataclass(frozen=True)
class Grant:
    """What the install code exchange returns."""

    access_token: str
    eshop_id: int
    eshop_url: str
    contact_email: str


def refresh_margin(lifetime: float) -> float:
    return min(REFRESH_MARGIN_CAP_SECONDS, lifetime * REFRESH_MARGIN_SHARE)


@dataclass(frozen=True)
class AccessToken:
    value: str
    expires_at: float
    lifetime: float

    @property
    def fresh(self) -> bool:
        """Still far enough from its expiry to be used without minting its successor."""
        return self.expires_at - time.time() > refresh_margin(self.lifetime)

    @property
    def usable(self) -> bool:
        """Still valid for a request that leaves now."""
        return self.expires_at - time.time() > LAST_USE_SECONDS


def partner_oauth_url(action: str) -> str:
    return f"{settings.SHOPTET_PARTNER_URL}/action/ApiOAuthServer/{action}"


def install_redirect_uri() -> str:
    return f"{settings.PUBLIC_URL}/shoptet/install/"


# ---------------------------------------------------------------------------
# Install: code → permanent OAuth token
# ---------------------------------------------------------------------------


def exchange_code(code: str, *, timeout: float | None = None) -> Grant:
    """Exchange a one-time install code for the e-shop's permanent OAuth token.

    Raises OAuthError when Shoptet refuses the code, TransportError when it cannot be asked.
    """
    # Reference: https://developers.shoptet.com/ "Installing the addon" (partner OAuth server, not in the spec)
    payload = {
        "client_id": settings.SHOPTET_CLIENT_ID,
        "client_secret": settings.SHOPTET_CLIENT_SECRET,
        "code": code,
        "grant_type": "authorization_code",
        "redirect_uri": install_redirect_uri(),
        "scope": "api",
    }
    try:
        response = requests.post(
            partner_oauth_url("token"),
            json=payload,
            timeout=timeout or settings.SHOPTET_INSTALL_EXCHANGE_TIMEOUT,
        )
    except requests.Timeout as error:
        raise TransportError("Shoptet's OAuth server did not answer in time") from error
    except requests.RequestException as error:
        raise TransportError(f"Shoptet's OAuth server is unreachable ({type(error).__name__})") from error
    if response.status_code != 200:
        raise OAuthError.from_response(response)
    return _grant_from(response)


def _grant_from(response: requests.Response) -> Grant:
    body = oauth.json_object(response, server="Shoptet's OAuth server")
    if body.get("error"):
        raise OAuthError(str(body["error"]), str(body.get("error_description") or ""), status=response.status_code)
    access_token = body.get("access_token")
    eshop_id = body.get("eshopId")
    if not isinstance(access_token, str) or not access_token:
        raise TransportError("Shoptet's OAuth answer holds no access_token")
    try:
        parsed_eshop_id = parse_eshop_id(eshop_id)
    except InvalidEshopId as error:
        raise TransportError("Shoptet's OAuth answer holds no valid eshopId") from error
    return Grant(
        access_token=access_token,
        eshop_id=parsed_eshop_id,
        eshop_url=str(body.get("eshopUrl") or ""),
        contact_email=str(body.get("contactEmail") or ""),
    )


# ---------------------------------------------------------------------------
# API access tokens: cached, single-flight, shared by every process
# ---------------------------------------------------------------------------


def _token_key(installation: Tenant) -> str:
    return f"shoptet:{installation.eshop_id}:api-token"


def _lock_key(installation: Tenant) -> str:
    return f"shoptet:{installation.eshop_id}:api-token:mint-lock"


def cached_token(installation: Tenant) -> AccessToken | None:
    stored = cache.get(_token_key(installation))
    if not stored:
        return None
    try:
        data = json.loads(crypto.decrypt(stored))
        return AccessToken(value=data["value"], expires_at=float(data["expires_at"]), lifetime=float(data["lifetime"]))
    except (crypto.UndecryptableSecret, ValueError, KeyError, TypeError):
        return None


def _store(installation: Tenant, token: AccessToken) -> None:
    stored = crypto.encrypt(
        json.dumps({"value": token.value, "expires_at": token.expires_at, "lifetime": token.lifetime})
    )
    # Kept until Shoptet's expiry, not the refresh margin: at the 5-token cap it is still worth using.
    ttl = max(1, math.ceil(token.expires_at - time.time()))
    cache.set(_token_key(installation), stored, timeout=ttl)


def get_access_token(installation: Tenant) -> str:
    """Return a valid API token for the e-shop, minting one only when no process has a fresh one."""
    with bound_eshop(installation.eshop_id):
        return _get_access_token(installation)


def _get_access_token(installation: Tenant) -> str:
    deadline = time.monotonic() + WAIT_FOR_MINT_SECONDS
    while True:
        token = cached_token(installation)
        if token and token.fresh:
            return token.value
        owner = f"{random.getrandbits(64):016x}"
        if cache.add(_lock_key(installation), owner, timeout=MINT_LOCK_SECONDS):
            try:
                return _mint_unless_fresh(installation)
            finally:
                if cache.get(_lock_key(installation)) == owner:
                    cache.delete(_lock_key(installation))
        if token and token.usable:
            # Another worker is minting its successor; this one is still valid for a request now.
            return token.value
        if time.monotonic() > deadline:
            raise TransportError(f"no API token for e-shop {installation.eshop_id}: another worker's mint hangs")
        time.sleep(0.05 + random.random() * 0.05)  # noqa: S311 - jitter


def _mint_unless_fresh(installation: Tenant) -> str:
    # Another process may have minted while we waited for the lock.
    token = cached_token(installation)
    if token and token.fresh:
        return token.value
    try:
        token = mint_access_token(installation)
    except MaximumTokensReached:
        return _wait_at_cap(installation)
    _store(installation, token)
    return token.value


def _wait_at_cap(installation: Tenant) -> str:
    """Shoptet has 5 valid tokens for this e-shop: use one that is still valid, or mint once one expires.

    Runs under the mint lock, so the other workers keep using the cached token meanwhile instead of
    asking Shoptet too. Bounded: past WAIT_AT_CAP_SECONDS the refusal goes to the caller, whose task
    retries it as a transient error.
    """
    metrics.increment("shoptet_api_token_cap_waits")
    logger.warning("shoptet api token cap reached eshop_id=%s; waiting for a token", installation.eshop_id)
    deadline = time.monotonic() + WAIT_AT_CAP_SECONDS
    pause = 0.25
    while True:
        token = cached_token(installation)
        if token and token.usable:
            return token.value
        # Still ours: the waiting workers must not all turn to Shoptet as soon as the lock would lapse.
        cache.touch(_lock_key(installation), MINT_LOCK_SECONDS)
        time.sleep(pause + random.random() * pause)  # noqa: S311 - jitter
        pause = min(pause * 2, 5.0)
        try:
            token = mint_access_token(installation)
        except MaximumTokensReached:
            if time.monotonic() > deadline:
                raise
            continue
        _store(installation, token)
        return token.value


def discard_access_token(installation: Tenant, value: str) -> None:
    """Forget `value` if it is still the cached token (Shoptet said it expired); keep a newer one."""
    token = cached_token(installation)
    if token and token.value == value:
        cache.delete(_token_key(installation))


def forget_access_tokens(installation: Tenant) -> None:
    """Drop the cached token: the installation is gone or its OAuth token changed."""
    cache.delete(_token_key(installation))


def mint_access_token(installation: Tenant) -> AccessToken:
    """Ask the partner OAuth server for a new 30-minute API token (counts towards the 5-token cap)."""
    # Reference: https://developers.shoptet.com/ "Getting API access token" (partner OAuth server)
    started = time.time()
    try:
        response = requests.get(
            partner_oauth_url("getAccessToken"),
            headers={"Authorization": f"Bearer {installation.oauth_token}"},
            timeout=MINT_TIMEOUT_SECONDS,
        )
    except requests.RequestException as error:
        raise TransportError(
            f"getAccessToken failed for e-shop {installation.eshop_id} ({type(error).__name__})"
        ) from error
    body = _json_body(response)
    if response.status_code != 200 or body.get("error") or not body.get("access_token"):
        refusal = OAuthError.from_response(response)
        if isinstance(refusal, (AddonNotInstalled, AddonSuspended)):
            # Shoptet's word on the addon's state: the tenant app mirrors it before the caller sees the error.
            addon_refused.send(sender=Tenant, tenant=installation, error=refusal)
        raise refusal
    expires_in = _expires_in(body.get("expires_in"))
    metrics.increment("shoptet_api_tokens_minted")
    logger.info("shoptet api token minted eshop_id=%s expires_in=%s", installation.eshop_id, expires_in)
    return AccessToken(value=str(body["access_token"]), expires_at=started + expires_in, lifetime=expires_in)


def _json_body(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _expires_in(value: object) -> float:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = 1800.0
    return seconds if seconds > 0 else 1800.0
