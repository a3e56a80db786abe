"""The e-shop's own OAuth server: the `authorize` URL, the `basic_eshop` code exchange and getBasicEshop."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from shoptet_api import oauth
from shoptet_api.errors import OAuthError, TransportError
from tests.fakes.shoptet import FakeShoptet

ESHOP_ID = 1000001
REDIRECT_URI = "http://platform.example/addon/settings/"


@pytest.fixture
def oauth_url(fake_shoptet: FakeShoptet) -> str:
    """The e-shop's OAuth server, as `GET /api/eshop` → `urls[oauth]` names it."""
    return f"{fake_shoptet.add_eshop(ESHOP_ID).url}action/OAuthServer/"


def exchange(oauth_url: str, code: str, *, client_secret: str = "test-secret") -> str:
    return oauth.exchange_code(
        oauth_url=oauth_url, client_id="test-client", client_secret=client_secret, code=code, redirect_uri=REDIRECT_URI
    )


def test_authorize_url_asks_the_eshops_server_for_a_basic_eshop_code(oauth_url: str) -> None:
    url = oauth.authorize_url(oauth_url=oauth_url, client_id="test-client", redirect_uri=REDIRECT_URI, state="s-1")

    assert url.startswith(f"{oauth_url}authorize?")
    assert parse_qs(urlsplit(url).query) == {
        "client_id": ["test-client"],
        "scope": ["basic_eshop"],
        "response_type": ["code"],
        "redirect_uri": [REDIRECT_URI],
        "state": ["s-1"],
    }
    answer = requests.get(url, allow_redirects=False, timeout=5)
    assert answer.status_code == 302
    back = urlsplit(answer.headers["Location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == REDIRECT_URI
    assert parse_qs(back.query)["state"] == ["s-1"]


def test_a_code_is_exchanged_once_and_its_token_names_the_admin_and_the_eshop(
    fake_shoptet: FakeShoptet, oauth_url: str
) -> None:
    code = fake_shoptet.issue_admin_code(ESHOP_ID, REDIRECT_URI, email="  jana@eshop.example ", name="Jana")

    access_token = exchange(oauth_url, code)

    assert oauth.basic_eshop(oauth_url=oauth_url, access_token=access_token) == oauth.BasicEshop(
        project_id=str(ESHOP_ID), email="jana@eshop.example", name="Jana"
    )
    with pytest.raises(OAuthError) as spent:
        exchange(oauth_url, code)
    assert (spent.value.error, spent.value.status) == ("invalid_grant", 400)


def test_wrong_client_credentials_are_an_oauth_refusal(fake_shoptet: FakeShoptet, oauth_url: str) -> None:
    code = fake_shoptet.issue_admin_code(ESHOP_ID, REDIRECT_URI)

    with pytest.raises(OAuthError) as refused:
        exchange(oauth_url, code, client_secret="wrong")

    assert (refused.value.error, refused.value.status) == ("invalid_client", 400)


def test_a_server_error_keeps_its_status_for_the_caller(fake_shoptet: FakeShoptet, oauth_url: str) -> None:
    fake_shoptet.add_fault("POST", r"/action/OAuthServer/token$", 503, body={"error": "server_error"})

    with pytest.raises(OAuthError) as failed:
        exchange(oauth_url, fake_shoptet.issue_admin_code(ESHOP_ID, REDIRECT_URI))

    assert failed.value.status == 503


def test_an_answer_that_is_not_json_is_a_transport_error(fake_shoptet: FakeShoptet, oauth_url: str) -> None:
    fake_shoptet.add_fault("POST", r"/action/OAuthServer/token$", 502, body="<h1>Bad gateway</h1>")

    with pytest.raises(TransportError):
        exchange(oauth_url, fake_shoptet.issue_admin_code(ESHOP_ID, REDIRECT_URI))


def test_an_unreachable_server_is_a_transport_error() -> None:
    with pytest.raises(TransportError):
        exchange("http://127.0.0.1:9/action/OAuthServer/", "code")


def test_an_unknown_access_token_gets_no_basic_eshop(oauth_url: str) -> None:
    with pytest.raises(TransportError):
        oauth.basic_eshop(oauth_url=oauth_url, access_token="not-a-token")
