"""Who is on the addon settings page: an e-shop admin proven by Shoptet's `basic_eshop` OAuth.

`#SHOP_ID#` in the settings URL proves nothing. The code Shoptet substitutes for `#OAUTH_CODE#` (or
hands out after `authorize`) is exchanged at the e-shop's own OAuth server, `getBasicEshop` names the
admin and the e-shop, and only an e-shop equal to the installation is accepted. From then on a short-lived
token, encrypted and authenticated with the project's secrets key (Fernet), carries the proof from page to
page: inside Shoptet's iframe the browser may drop cookies, so the token rides in links and forms and
nothing depends on a cookie.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.utils.crypto import constant_time_compare, salted_hmac

from config import crypto
from installations import services
from installations.models import Installation
from shoptet_api import oauth
from shoptet_api.errors import OAuthError, ShoptetError
from shoptet_api.ids import InvalidEshopId, parse_eshop_id

# A token not used for this long is refused; every page hands out a renewed one.
SESSION_IDLE_SECONDS = 30 * 60
# However often renewed, a login ends after this; the admin opens the addon from Shoptet again.
SESSION_LIFETIME_SECONDS = 8 * 60 * 60
# The admin gets from our redirect to Shoptet's `authorize` and back within this.
STATE_SECONDS = 10 * 60
# A session token is a few hundred characters; anything much longer is not one.
MAX_TOKEN_LENGTH = 2048

LANGUAGES = ("cs", "sk", "hu", "en")
DEFAULT_LANGUAGE = "en"

# These values are inside every token and state already handed out: they keep the module's old name,
# since changing them would log every admin out and void the sign-ins under way.
_SESSION_PURPOSE = "installations.auth.session"
_STATE_SALT = "installations.auth.state"
_CSRF_SALT = "installations.auth.csrf"


class Reason(StrEnum):
    """Why a request to the settings page is refused; the page explains each one."""

    INCOMPLETE_LINK = "incomplete-link"
    UNKNOWN_ESHOP = "unknown-eshop"
    NOT_INSTALLED = "not-installed"
    SUSPENDED = "suspended"
    NOT_READY = "not-ready"
    INVALID_CODE = "invalid-code"
    FOREIGN_ESHOP = "foreign-eshop"
    INVALID_STATE = "invalid-state"
    SESSION_EXPIRED = "session-expired"
    INVALID_SESSION = "invalid-session"
    INVALID_FORM = "invalid-form"
    SHOPTET_UNAVAILABLE = "shoptet-unavailable"


STATUS_OF: dict[Reason, int] = {
    Reason.INCOMPLETE_LINK: 400,
    Reason.UNKNOWN_ESHOP: 404,
    Reason.NOT_INSTALLED: 404,
    Reason.SUSPENDED: 403,
    Reason.NOT_READY: 503,
    Reason.INVALID_CODE: 403,
    Reason.FOREIGN_ESHOP: 403,
    Reason.INVALID_STATE: 403,
    Reason.SESSION_EXPIRED: 403,
    Reason.INVALID_SESSION: 403,
    Reason.INVALID_FORM: 403,
    Reason.SHOPTET_UNAVAILABLE: 502,
}


class AccessRefused(Exception):
    """The request does not come from a proven admin of an active installation."""

    def __init__(self, reason: Reason, *, installation: Installation | None = None) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.status = STATUS_OF[reason]
        # Known when the e-shop is: the refusal page may then be framed by that e-shop's admin.
        self.installation = installation


@dataclass(frozen=True)
class Admin:
    """An e-shop admin as Shoptet vouched for them, and the login that carries it."""

    eshop_id: int
    installation_id: int
    email: str
    name: str
    language: str
    session_id: str
    logged_in_at: int


@dataclass(frozen=True)
class Session:
    admin: Admin
    installation: Installation


def language_of(value: str | None) -> str:
    """Shoptet's `#LANGUAGE#` (en, cs, sk, hu); anything else falls back to English."""
    code = (value or "").strip().lower()[:2]
    return code if code in LANGUAGES else DEFAULT_LANGUAGE


def redirect_uri() -> str:
    """Where Shoptet sends the admin back with a code: the settings entry itself."""
    return f"{settings.PUBLIC_URL}/addon/settings/"


# ---------------------------------------------------------------------------
# The installation behind an `eshopId`
# ---------------------------------------------------------------------------


def installation_for(eshop_id: object) -> Installation:
    """The installation an admin may log in to: it exists, is active and knows its OAuth server."""
    if isinstance(eshop_id, str):
        eshop_id = eshop_id.strip()
    if eshop_id in (None, ""):
        raise AccessRefused(Reason.INCOMPLETE_LINK)
    try:
        parsed = parse_eshop_id(eshop_id)
    except InvalidEshopId as error:
        raise AccessRefused(Reason.UNKNOWN_ESHOP) from error
    installation = Installation.objects.filter(eshop_id=parsed).first()
    if installation is None:
        raise AccessRefused(Reason.UNKNOWN_ESHOP)
    _check_active(installation)
    if not installation.oauth_url:
        # Onboarding has not run yet: ask Shoptet for the OAuth server now instead of turning the admin away.
        try:
            services.refresh_identity(installation=installation)
        except ShoptetError as error:
            raise AccessRefused(Reason.NOT_READY, installation=installation) from error
        if not installation.oauth_url:
            raise AccessRefused(Reason.NOT_READY, installation=installation)
    return installation


def names_eshop(value: str, eshop_id: int) -> bool:
    """Whether an `eshopId` of the request names this e-shop (read as every surface reads an e-shop id)."""
    try:
        return parse_eshop_id(value.strip()) == eshop_id
    except InvalidEshopId:
        return False


def _check_active(installation: Installation) -> None:
    if installation.status == Installation.Status.SUSPENDED:
        raise AccessRefused(Reason.SUSPENDED, installation=installation)
    if installation.status != Installation.Status.ACTIVE:
        raise AccessRefused(Reason.NOT_INSTALLED, installation=installation)


# ---------------------------------------------------------------------------
# Full flow: our redirect to `authorize`, and the `state` that must come back
# ---------------------------------------------------------------------------


def authorize_url(*, installation: Installation, language: str) -> str:
    """Shoptet's `authorize` on the e-shop's own OAuth server, with a single-use `state`."""
    nonce = secrets.token_urlsafe(24)
    cache.set(_state_key(installation.eshop_id, nonce), installation.pk, timeout=STATE_SECONDS)
    state = signing.dumps({"e": installation.eshop_id, "l": language, "n": nonce}, salt=_STATE_SALT)
    return oauth.authorize_url(
        oauth_url=installation.oauth_url, client_id=settings.SHOPTET_CLIENT_ID, redirect_uri=redirect_uri(), state=state
    )


def read_state(state: str) -> tuple[int, str]:
    """The e-shop id and language a `state` was issued for; it works once, within STATE_SECONDS."""
    try:
        payload = signing.loads(state, salt=_STATE_SALT, max_age=STATE_SECONDS)
        eshop_id, language, nonce = int(payload["e"]), language_of(payload["l"]), str(payload["n"])
    except (signing.BadSignature, KeyError, TypeError, ValueError) as error:
        raise AccessRefused(Reason.INVALID_STATE) from error
    # delete() answers whether the key was there: of two returns with the same state only one wins.
    if not cache.delete(_state_key(eshop_id, nonce)):
        raise AccessRefused(Reason.INVALID_STATE)
    return eshop_id, language


def _state_key(eshop_id: int, nonce: str) -> str:
    return f"addon:{eshop_id}:oauth-state:{nonce}"


# ---------------------------------------------------------------------------
# Login: code → access token → getBasicEshop → Admin
# ---------------------------------------------------------------------------


def log_in(*, installation: Installation, code: str, language: str) -> Admin:
    """Prove the admin with a `basic_eshop` code; refuse unless Shoptet names this installation's e-shop."""
    if not code or len(code) > 2048 or not code.isascii() or not code.isprintable():
        raise AccessRefused(Reason.INVALID_CODE, installation=installation)
    try:
        access_token = oauth.exchange_code(
            oauth_url=installation.oauth_url,
            client_id=settings.SHOPTET_CLIENT_ID,
            client_secret=settings.SHOPTET_CLIENT_SECRET,
            code=code,
            redirect_uri=redirect_uri(),
        )
    except OAuthError as error:
        # A refused code is the admin's to retry from Shoptet; a failing server is Shoptet's.
        reason = Reason.SHOPTET_UNAVAILABLE if (error.status or 0) >= 500 else Reason.INVALID_CODE
        raise AccessRefused(reason, installation=installation) from error
    except ShoptetError as error:
        raise AccessRefused(Reason.SHOPTET_UNAVAILABLE, installation=installation) from error
    try:
        basic = oauth.basic_eshop(oauth_url=installation.oauth_url, access_token=access_token)
    except ShoptetError as error:
        raise AccessRefused(Reason.SHOPTET_UNAVAILABLE, installation=installation) from error
    if basic.project_id != str(installation.eshop_id):
        raise AccessRefused(Reason.FOREIGN_ESHOP, installation=installation)
    if not basic.email:
        raise AccessRefused(Reason.INVALID_CODE, installation=installation)
    return Admin(
        eshop_id=installation.eshop_id,
        installation_id=installation.pk,
        email=basic.email[:254],
        name=basic.name[:255],
        language=language,
        session_id=secrets.token_urlsafe(16),
        logged_in_at=int(time.time()),
    )


# ---------------------------------------------------------------------------
# The session token: encrypted, short-lived, bound to the e-shop, the installation and the admin
# ---------------------------------------------------------------------------


def issue_token(admin: Admin) -> str:
    """A token for the next request; its age counts from now, the login's from `logged_in_at`.

    Encrypted, not only signed: the token travels in URLs, and a signed payload would show the admin's
    e-mail and name to anyone who decodes it. Fernet also authenticates it, so it cannot be altered.
    """
    payload = {
        "p": _SESSION_PURPOSE,
        "e": admin.eshop_id,
        "i": admin.installation_id,
        "m": admin.email,
        "n": admin.name,
        "l": admin.language,
        "s": admin.session_id,
        "a": admin.logged_in_at,
        "u": int(time.time()),
    }
    return crypto.encrypt(json.dumps(payload, ensure_ascii=False, separators=(",", ":")))


def read_token(token: str) -> Admin:
    """The admin a token was issued for; refused when tampered with, idle too long or the login is too old."""
    payload = _session_payload(token)
    try:
        admin = Admin(
            eshop_id=int(payload["e"]),
            installation_id=int(payload["i"]),
            email=str(payload["m"]),
            name=str(payload["n"]),
            language=language_of(payload["l"]),
            session_id=str(payload["s"]),
            logged_in_at=int(payload["a"]),
        )
        issued_at = int(payload["u"])
    except (KeyError, TypeError, ValueError) as error:
        raise AccessRefused(Reason.INVALID_SESSION) from error
    now = time.time()
    if now - issued_at > SESSION_IDLE_SECONDS or now - admin.logged_in_at > SESSION_LIFETIME_SECONDS:
        raise AccessRefused(Reason.SESSION_EXPIRED)
    return admin


def _session_payload(token: str) -> dict[str, Any]:
    # Checked before decrypting: a lone surrogate cannot even be encoded, and a huge value is no token.
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        raise AccessRefused(Reason.INVALID_SESSION)
    try:
        payload = json.loads(crypto.decrypt(token))
    except (crypto.UndecryptableSecret, ValueError) as error:
        raise AccessRefused(Reason.INVALID_SESSION) from error
    # The purpose keeps any other value encrypted under the same keys from passing for a session.
    if not isinstance(payload, dict) or payload.get("p") != _SESSION_PURPOSE:
        raise AccessRefused(Reason.INVALID_SESSION)
    return payload


def authenticate(*, token: str, eshop_ids: list[str]) -> Session:
    """The session of a page request: the token, every `eshopId` the request names, and a live installation.

    `eshop_ids` are all the values the request carries (query string and form); each must be the token's
    e-shop, so changing one in the URL or the form is refused rather than ignored.
    """
    admin = read_token(token)
    installation = Installation.objects.filter(pk=admin.installation_id, eshop_id=admin.eshop_id).first()
    if not eshop_ids or not all(names_eshop(value, admin.eshop_id) for value in eshop_ids):
        # The token is genuine, so its e-shop's administration is what frames the refusal.
        raise AccessRefused(Reason.INVALID_SESSION, installation=installation)
    if installation is None:
        raise AccessRefused(Reason.NOT_INSTALLED)
    _check_active(installation)
    return Session(admin=admin, installation=installation)


# ---------------------------------------------------------------------------
# Forms: a second secret that is only ever in form bodies, never in a URL
# ---------------------------------------------------------------------------


def form_token(admin: Admin) -> str:
    """The value every form posts back. Tied to the login, so a leaked link (token in its URL) cannot post."""
    return salted_hmac(_CSRF_SALT, f"{admin.eshop_id}:{admin.session_id}", algorithm="sha256").hexdigest()


def check_form(admin: Admin, *, value: str, origin: str | None, own_origin: str) -> None:
    """Refuse a post without this login's form token, or sent from a page of another origin."""
    if not constant_time_compare(value or "", form_token(admin)):
        raise AccessRefused(Reason.INVALID_FORM)
    if origin is not None and _origin(origin) != _origin(own_origin):
        raise AccessRefused(Reason.INVALID_FORM)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()
