"""The e-shop's own OAuth server (`basic_eshop`): the `authorize` URL, the code exchange and getBasicEshop.

Every e-shop has its OAuth server at the `oauth` URL of `GET /api/eshop`; it proves who an admin is. Plain
values in, data out: this module knows no installation and writes nothing. It raises `OAuthError` when the
server refuses and `TransportError` when it gives no usable answer; its callers decide what that means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests

from shoptet_api.errors import OAuthError, TransportError

# The settings page must answer within Shoptet's 60 s; two calls to the OAuth server fit well inside.
OAUTH_TIMEOUT_SECONDS = 10.0
SCOPE = "basic_eshop"


@dataclass(frozen=True)
class BasicEshop:
    """What getBasicEshop says: the e-shop's id as Shoptet wrote it, and the admin's e-mail and name."""

    project_id: str
    email: str
    name: str


def authorize_url(*, oauth_url: str, client_id: str, redirect_uri: str, state: str) -> str:
    """Shoptet's `authorize` on the e-shop's OAuth server, asking for a `basic_eshop` code."""
    query = {
        "client_id": client_id,
        "scope": SCOPE,
        "response_type": "code",
        "redirect_uri": redirect_uri,
        "state": state,
    }
    return f"{oauth_url}authorize?{urlencode(query)}"


def exchange_code(*, oauth_url: str, client_id: str, client_secret: str, code: str, redirect_uri: str) -> str:
    """The access token for a `basic_eshop` code; OAuthError (with the HTTP status) when it is refused."""
    # Reference: https://developers.shoptet.com/ "E-shop verification using OAuth" (`<oauth>token`, not in the spec)
    fields = {
        "client_id": client_id,
        "client_secret": client_secret,
        "code": code,
        "grant_type": "authorization_code",
        "redirect_uri": redirect_uri,
        "scope": SCOPE,
    }
    response = _call("POST", f"{oauth_url}token", data=fields)
    body = json_object(response)
    if response.status_code != 200 or body.get("error") or not body.get("access_token"):
        raise OAuthError.from_response(response)
    return str(body["access_token"])


def basic_eshop(*, oauth_url: str, access_token: str) -> BasicEshop:
    """The e-shop and admin an access token was issued for; TransportError unless Shoptet answers as documented."""
    # Reference: https://developers.shoptet.com/ "E-shop verification using OAuth" (`resource?method=getBasicEshop`)
    response = _call(
        "GET",
        f"{oauth_url}resource",
        params={"method": "getBasicEshop"},
        headers={"Authorization": f"Bearer {access_token}"},
    )
    body = json_object(response)
    data = body.get("data")
    if response.status_code != 200 or not body.get("success") or not isinstance(data, dict):
        raise TransportError(f"getBasicEshop answered HTTP {response.status_code} without its data")
    project, user = data.get("project") or {}, data.get("user") or {}
    if not isinstance(project, dict) or not isinstance(user, dict):
        raise TransportError("getBasicEshop answered without a project or user object")
    return BasicEshop(
        project_id=str(project.get("id", "")),
        email=str(user.get("email") or "").strip(),
        name=str(user.get("name") or "").strip(),
    )


def _call(method: str, url: str, **kwargs: Any) -> requests.Response:
    try:
        return requests.request(method, url, timeout=OAUTH_TIMEOUT_SECONDS, allow_redirects=False, **kwargs)
    except requests.RequestException as error:
        raise TransportError(f"the e-shop's OAuth server is unreachable ({type(error).__name__})") from error


def json_object(response: requests.Response, *, server: str = "the e-shop's OAuth server") -> dict[str, Any]:
    """An OAuth server's answer as a JSON object; anything else is a TransportError naming `server`."""
    try:
        body = response.json()
    except ValueError as error:
        raise TransportError(f"{server} answered with something that is not JSON") from error
    if not isinstance(body, dict):
        raise TransportError(f"{server} answered with an unexpected JSON value")
    return body
