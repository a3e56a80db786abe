"""The OAuth servers: the partner e-shop's (install code exchange, API access tokens) and each e-shop's own
(`basic_eshop` admin verification behind `urls[oauth]` of `GET /api/eshop`)."""

from __future__ import annotations

import secrets
import string
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit, urlunsplit

from .messages import Request, Response, oauth_error
from .state import INSTALLED, SUSPENDED, UNINSTALLED, AdminCode, ApiToken, FakeEshop, InstallCode, OAuthToken

if TYPE_CHECKING:
    from .fake import FakeShoptet

ALPHABET = string.ascii_letters + string.digits


def random_string(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def without_query(url: str) -> str:
    scheme, netloc, path, _, _ = urlsplit(url)
    return urlunsplit((scheme, netloc, path, "", ""))


# -- partner OAuth server: install ------------------------------------------------------------------------
def issue_install_code(fake: FakeShoptet, eshop: FakeEshop, redirect_uri: str | None) -> str:
    """A single-use code (about 255 characters, per the spec), valid for `fake.install_code_ttl` seconds."""
    code = InstallCode(random_string(255), eshop.eshop_id, redirect_uri, fake.clock.time() + fake.install_code_ttl)
    fake.state.install_codes[code.value] = code
    return code.value


def issue_oauth_token(fake: FakeShoptet, eshop: FakeEshop) -> str:
    """Install: a new 255-character OAuth token; the previous installation's token and API tokens die."""
    revoke_installation(eshop)
    token = OAuthToken(random_string(255), eshop.eshop_id)
    eshop.oauth_tokens.append(token)
    fake.state.oauth_tokens[token.value] = token
    eshop.status = INSTALLED
    return token.value


def revoke_installation(eshop: FakeEshop, *, keep_oauth_token: bool = False) -> None:
    """API tokens die; so do OAuth tokens unless kept (then getAccessToken answers `addon_not_installed`)."""
    if not keep_oauth_token:
        for token in eshop.oauth_tokens:
            token.revoked = True
    for api_token in eshop.api_tokens.values():
        api_token.revoked = True


def exchange_code(fake: FakeShoptet, request: Request) -> Response:
    """`POST <partner>/action/ApiOAuthServer/token`: JSON or form body, as sent by the official examples."""
    fields = request.fields()
    missing = [name for name in ("client_id", "code", "grant_type", "scope") if not fields.get(name)]
    if missing:
        return oauth_error(400, "invalid_request", f"Missing parameter(s): {', '.join(missing)}.")
    if fields["grant_type"] != "authorization_code" or fields["scope"] != "api":
        return oauth_error(400, "invalid_request", "grant_type must be authorization_code and scope must be api.")
    if fields["client_id"] != fake.client_id or fields.get("client_secret") != fake.client_secret:
        return oauth_error(400, "invalid_client", "The client credentials are invalid.")
    with fake.state.lock:
        code = fake.state.install_codes.get(fields["code"])
        if code is None or code.used or code.expires_at <= fake.clock.time():
            return oauth_error(400, "invalid_grant", "The authorization code is invalid, expired or already used.")
        code.used = True  # single use: a second attempt fails even when the first one was refused
        request.eshop_id = code.eshop_id
        if code.redirect_uri is not None and fields.get("redirect_uri") != code.redirect_uri:
            return oauth_error(400, "invalid_grant", "The redirect URI does not match the one the code was issued for.")
        eshop = fake.state.eshops[code.eshop_id]
        code.oauth_token = issue_oauth_token(fake, eshop)
        return Response.json(
            200,
            {
                "access_token": code.oauth_token,
                "expires_in": None,
                "token_type": "Bearer",
                "scope": "api",
                "eshopId": eshop.eshop_id,
                "eshopUrl": eshop.url,
                "contactEmail": eshop.email,
            },
        )


# -- partner OAuth server: API access tokens ----------------------------------------------------------------
def issue_api_token(fake: FakeShoptet, eshop: FakeEshop, oauth_token: str) -> ApiToken:
    """A short-lived API token, shaped like Shoptet's `123456-a-123-XXXX...` (40-60 characters)."""
    prefix = f"{eshop.eshop_id}-a-{secrets.randbelow(900) + 100}-"
    value = prefix + random_string(secrets.randbelow(21) + 40 - len(prefix))
    token = ApiToken(value, eshop.eshop_id, oauth_token, fake.clock.time() + fake.token_ttl)
    eshop.api_tokens[value] = token
    fake.state.api_tokens[value] = token
    eshop.stats.tokens_minted += 1
    valid = len(eshop.valid_api_tokens(fake.clock.time()))
    eshop.stats.max_valid_tokens = max(eshop.stats.max_valid_tokens, valid)
    return token


def get_access_token(fake: FakeShoptet, request: Request) -> Response:
    """`GET <partner>/action/ApiOAuthServer/getAccessToken` with `Authorization: Bearer <OAuth token>`."""
    with fake.state.lock:
        oauth_token = fake.state.oauth_tokens.get(request.bearer_token() or "")
        if oauth_token is None:
            return oauth_error(fake.invalid_token_status, "invalid_token", "The OAuth access token is invalid.")
        eshop = fake.state.eshops[oauth_token.eshop_id]
        request.eshop_id = eshop.eshop_id
        if oauth_token.revoked:
            return oauth_error(fake.invalid_token_status, "invalid_token", "The OAuth access token is invalid.")
        if eshop.status == UNINSTALLED:
            return oauth_error(fake.not_installed_status, "addon_not_installed", "The addon is not installed.")
        if eshop.status == SUSPENDED:
            return oauth_error(fake.suspended_status, "addon_suspended", "The addon is suspended.")
        valid = [token for token in eshop.valid_api_tokens(fake.clock.time()) if token.oauth_token == oauth_token.value]
        if len(valid) >= fake.max_api_tokens:
            return oauth_error(
                fake.max_tokens_status,
                "maximum_tokens_reached",
                f"At most {fake.max_api_tokens} valid access tokens may exist at the same time.",
            )
        token = issue_api_token(fake, eshop, oauth_token.value)
        return Response.json(200, {"access_token": token.value, "expires_in": fake.token_ttl})


# -- the e-shop's own OAuth server: admin verification (scope basic_eshop) ---------------------------------
ADMIN_NAME = "Jana Nováková"  # the e-shop's contact person in `GET /api/eshop`


def issue_admin_code(
    fake: FakeShoptet, eshop: FakeEshop, redirect_uri: str | None, email: str | None = None, name: str | None = None
) -> str:
    """A code as Shoptet puts into `#OAUTH_CODE#` of the addon settings URL, or hands out after `authorize`."""
    expires_at = fake.clock.time() + fake.install_code_ttl
    code = AdminCode(
        random_string(64), eshop.eshop_id, redirect_uri, expires_at, email or eshop.email, name or ADMIN_NAME
    )
    fake.state.admin_codes[code.value] = code
    return code.value


def authorize(fake: FakeShoptet, request: Request) -> Response:
    """`GET <oauth>authorize`: the admin is always logged in here, so redirect straight back with a code."""
    eshop_id = int(request.params["eshopId"])
    redirect_uri = request.query.get("redirect_uri", "")
    if request.query.get("client_id") != fake.client_id or not redirect_uri:
        return Response.text(400, "<h1>Invalid OAuth request</h1>")
    with fake.state.lock:
        eshop = fake.state.eshops.get(eshop_id)
        if eshop is None:
            return Response.text(404, "<h1>E-shop not found</h1>")
        code = issue_admin_code(fake, eshop, redirect_uri)
    query = {"code": code, **({"state": request.query["state"]} if "state" in request.query else {})}
    separator = "&" if "?" in redirect_uri else "?"
    return Response(302, b"", {"Location": f"{redirect_uri}{separator}{urlencode(query)}"})


def admin_token(fake: FakeShoptet, request: Request) -> Response:
    """`POST <oauth>token` with `scope=basic_eshop`."""
    fields = request.fields()
    if fields.get("grant_type") != "authorization_code" or fields.get("scope") != "basic_eshop":
        return oauth_error(400, "invalid_request", "grant_type must be authorization_code and scope basic_eshop.")
    if fields.get("client_id") != fake.client_id or fields.get("client_secret") != fake.client_secret:
        return oauth_error(400, "invalid_client", "The client credentials are invalid.")
    with fake.state.lock:
        code = fake.state.admin_codes.get(fields.get("code", ""))
        eshop_id = int(request.params["eshopId"])
        if code is None or code.used or code.expires_at <= fake.clock.time() or code.eshop_id != eshop_id:
            return oauth_error(400, "invalid_grant", "The authorization code is invalid, expired or already used.")
        code.used = True
        if code.redirect_uri is not None and fields.get("redirect_uri") != code.redirect_uri:
            return oauth_error(400, "invalid_grant", "The redirect URI does not match the one the code was issued for.")
        token = random_string(64)
        fake.state.admin_tokens[token] = code
    return Response.json(
        200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600, "scope": "basic_eshop"}
    )


def resource(fake: FakeShoptet, request: Request) -> Response:
    """`<oauth>resource?method=getBasicEshop`: who the admin is and which e-shop they manage."""
    if request.query.get("method") != "getBasicEshop":
        return oauth_error(400, "invalid_request", "Unknown method.")
    with fake.state.lock:
        grant = fake.state.admin_tokens.get(request.bearer_token() or "")
        if grant is None or grant.eshop_id != int(request.params["eshopId"]):
            return oauth_error(401, "invalid_token", "The access token is invalid.")
        eshop = fake.state.eshops[grant.eshop_id]
        project = {"id": eshop.eshop_id, "url": eshop.url, "name": eshop.name}
    return Response.json(
        200, {"success": True, "data": {"user": {"email": grant.email, "name": grant.name}, "project": project}}
    )
