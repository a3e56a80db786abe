"""Who may open the settings page: only an admin Shoptet vouches for, of an active installation's e-shop."""

from __future__ import annotations

import base64
import contextlib
import json
import time
import zlib
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptography.fernet import Fernet
from django.test import Client

from addon import auth
from config import crypto
from installations.models import AddonSettings, Installation, SettingsChange
from tests.addon.conftest import ADMIN_EMAIL, ADMIN_NAME, log_in, refusal_reason
from tests.fakes.shoptet import FakeShoptet

pytestmark = pytest.mark.django_db

ENTRY = "/addon/settings/"


def token_calls(fake: FakeShoptet, eshop_id: int) -> int:
    return fake.request_count("POST", rf"^/eshops/{eshop_id}/action/OAuthServer/token$")


def assert_nothing_stored() -> None:
    assert AddonSettings.objects.count() == 0
    assert SettingsChange.objects.count() == 0


# ---------------------------------------------------------------------------
# Success
# ---------------------------------------------------------------------------


def test_code_from_the_settings_url_logs_the_admin_in(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation
) -> None:
    code = fake_shoptet.issue_admin_code(onboarded.eshop_id, email=ADMIN_EMAIL, name=ADMIN_NAME)

    response = client.get(ENTRY, {"eshopId": str(onboarded.eshop_id), "language": "cs", "code": code})

    assert response.status_code == 302
    location = urlsplit(response["Location"])
    query = parse_qs(location.query)
    assert location.path == "/addon/settings/overview/"
    assert query["eshopId"] == [str(onboarded.eshop_id)]
    assert query["language"] == ["cs"]
    admin = auth.read_token(query["t"][0])
    assert (admin.eshop_id, admin.installation_id, admin.email, admin.name, admin.language) == (
        onboarded.eshop_id,
        onboarded.pk,
        ADMIN_EMAIL,
        ADMIN_NAME,
        "cs",
    )
    assert token_calls(fake_shoptet, onboarded.eshop_id) == 1
    assert fake_shoptet.request_count("GET", rf"^/eshops/{onboarded.eshop_id}/action/OAuthServer/resource$") == 1

    page = client.get(response["Location"])
    assert page.status_code == 200
    assert onboarded.name in page.content.decode()
    assert "Přihlášený uživatel: jana@eshop.example" in page.content.decode()


def test_without_a_code_the_admin_is_sent_to_authorize_and_back(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation
) -> None:
    response = client.get(ENTRY, {"eshopId": str(onboarded.eshop_id), "language": "hu"})

    assert response.status_code == 302
    authorize = urlsplit(response["Location"])
    query = parse_qs(authorize.query)
    assert f"{authorize.scheme}://{authorize.netloc}{authorize.path}" == f"{onboarded.oauth_url}authorize"
    assert query["client_id"] == ["test-client"]
    assert query["scope"] == ["basic_eshop"]
    assert query["response_type"] == ["code"]
    assert query["redirect_uri"] == ["http://testserver/addon/settings/"]
    assert query["state"][0]

    # Shoptet's authorize (the admin is logged in there) sends the browser back with a code and the state.
    back = requests.get(response["Location"], allow_redirects=False, timeout=5)
    assert back.status_code == 302
    returned = urlsplit(back.headers["Location"])
    assert returned.path == ENTRY
    assert parse_qs(returned.query)["state"] == query["state"]

    landed = client.get(f"{returned.path}?{returned.query}")

    assert landed.status_code == 302
    landed_query = parse_qs(urlsplit(landed["Location"]).query)
    assert landed_query["eshopId"] == [str(onboarded.eshop_id)]
    assert landed_query["language"] == ["hu"]
    admin = auth.read_token(landed_query["t"][0])
    assert (admin.eshop_id, admin.email) == (onboarded.eshop_id, onboarded.contact_email)


def test_the_oauth_server_url_is_fetched_when_onboarding_has_not_stored_it(
    client: Client, fake_shoptet: FakeShoptet, installation: Installation
) -> None:
    assert installation.oauth_url == ""

    log_in(client, fake_shoptet, installation)

    installation.refresh_from_db()
    assert installation.oauth_url == f"{fake_shoptet.url}/eshops/{installation.eshop_id}/action/OAuthServer/"


def test_language_falls_back_to_english(client: Client, fake_shoptet: FakeShoptet, onboarded: Installation) -> None:
    login = log_in(client, fake_shoptet, onboarded, language="de")

    assert login.query()["language"] == "en"
    assert "Signed in as jana@eshop.example" in client.get(login.url).content.decode()


# ---------------------------------------------------------------------------
# Codes
# ---------------------------------------------------------------------------


def test_a_code_issued_for_another_eshop_is_refused(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation, other_onboarded: Installation
) -> None:
    foreign_code = fake_shoptet.issue_admin_code(other_onboarded.eshop_id)

    response = client.get(ENTRY, {"eshopId": str(onboarded.eshop_id), "code": foreign_code})

    assert response.status_code == 403
    assert refusal_reason(response) == "invalid-code"
    assert "Shoptet did not confirm who you are" in response.content.decode()
    assert other_onboarded.name not in response.content.decode()
    assert "Location" not in response
    assert_nothing_stored()


def test_an_admin_of_another_eshop_is_refused_even_when_the_oauth_server_accepts_the_code(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation, other_onboarded: Installation
) -> None:
    """getBasicEshop names the e-shop; a project id other than the installation's is never accepted."""
    Installation.objects.filter(pk=onboarded.pk).update(oauth_url=other_onboarded.oauth_url)
    foreign_code = fake_shoptet.issue_admin_code(other_onboarded.eshop_id)

    response = client.get(ENTRY, {"eshopId": str(onboarded.eshop_id), "code": foreign_code})

    assert response.status_code == 403
    assert refusal_reason(response) == "foreign-eshop"
    assert "You are signed in to a different e-shop" in response.content.decode()
    assert token_calls(fake_shoptet, other_onboarded.eshop_id) == 1
    assert_nothing_stored()


def test_a_replayed_code_is_refused(client: Client, fake_shoptet: FakeShoptet, onboarded: Installation) -> None:
    code = fake_shoptet.issue_admin_code(onboarded.eshop_id)
    first = client.get(ENTRY, {"eshopId": str(onboarded.eshop_id), "code": code})
    assert first.status_code == 302

    replay = client.get(ENTRY, {"eshopId": str(onboarded.eshop_id), "code": code})

    assert replay.status_code == 403
    assert refusal_reason(replay) == "invalid-code"
    assert "Location" not in replay


@pytest.mark.parametrize("code", ["not-a-code", "x" * 3000, "ř" * 10])
def test_an_invalid_code_is_refused(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation, code: str
) -> None:
    response = client.get(ENTRY, {"eshopId": str(onboarded.eshop_id), "code": code})

    assert response.status_code == 403
    assert refusal_reason(response) == "invalid-code"
    assert_nothing_stored()


def test_an_expired_code_is_refused(client: Client, fake_shoptet: FakeShoptet, onboarded: Installation) -> None:
    code = fake_shoptet.issue_admin_code(onboarded.eshop_id)
    fake_shoptet.advance_time(fake_shoptet.install_code_ttl + 1)

    response = client.get(ENTRY, {"eshopId": str(onboarded.eshop_id), "code": code})

    assert response.status_code == 403
    assert refusal_reason(response) == "invalid-code"


def test_an_unreachable_oauth_server_is_reported_not_mistaken_for_a_login(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation
) -> None:
    fake_shoptet.add_fault("POST", r"/action/OAuthServer/token$", 503)
    code = fake_shoptet.issue_admin_code(onboarded.eshop_id)

    response = client.get(ENTRY, {"eshopId": str(onboarded.eshop_id), "code": code})

    assert response.status_code == 502
    assert refusal_reason(response) == "shoptet-unavailable"
    assert_nothing_stored()


# ---------------------------------------------------------------------------
# State of the full flow
# ---------------------------------------------------------------------------


def start_full_flow(client: Client, installation: Installation) -> str:
    """Open the settings URL without a code; return the `state` sent to `authorize`."""
    response = client.get(ENTRY, {"eshopId": str(installation.eshop_id)})
    return parse_qs(urlsplit(response["Location"]).query)["state"][0]


def test_the_state_works_only_once(client: Client, fake_shoptet: FakeShoptet, onboarded: Installation) -> None:
    state = start_full_flow(client, onboarded)
    redirect_uri = auth.redirect_uri()
    first = client.get(ENTRY, {"code": fake_shoptet.issue_admin_code(onboarded.eshop_id, redirect_uri), "state": state})
    assert first.status_code == 302

    again = client.get(ENTRY, {"code": fake_shoptet.issue_admin_code(onboarded.eshop_id, redirect_uri), "state": state})

    assert again.status_code == 403
    assert refusal_reason(again) == "invalid-state"
    assert token_calls(fake_shoptet, onboarded.eshop_id) == 1


def test_a_tampered_state_is_refused(client: Client, fake_shoptet: FakeShoptet, onboarded: Installation) -> None:
    state = start_full_flow(client, onboarded)
    code = fake_shoptet.issue_admin_code(onboarded.eshop_id, auth.redirect_uri())

    response = client.get(ENTRY, {"code": code, "state": state[:-2] + ("AA" if state[-2:] != "AA" else "BB")})

    assert response.status_code == 403
    assert refusal_reason(response) == "invalid-state"
    assert token_calls(fake_shoptet, onboarded.eshop_id) == 0


def test_a_state_for_one_eshop_cannot_log_in_to_another(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation, other_onboarded: Installation
) -> None:
    state = start_full_flow(client, onboarded)
    code = fake_shoptet.issue_admin_code(other_onboarded.eshop_id, auth.redirect_uri())

    response = client.get(ENTRY, {"eshopId": str(other_onboarded.eshop_id), "code": code, "state": state})

    assert response.status_code == 403
    assert refusal_reason(response) == "invalid-state"
    assert token_calls(fake_shoptet, other_onboarded.eshop_id) == 0


def test_a_state_older_than_its_lifetime_is_refused(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued_at = time.time() - auth.STATE_SECONDS - 5
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: issued_at)
        state = parse_qs(urlsplit(client.get(ENTRY, {"eshopId": str(onboarded.eshop_id)})["Location"]).query)["state"][
            0
        ]
    code = fake_shoptet.issue_admin_code(onboarded.eshop_id, auth.redirect_uri())

    response = client.get(ENTRY, {"code": code, "state": state})

    assert response.status_code == 403
    assert refusal_reason(response) == "invalid-state"


def test_returning_from_authorize_without_a_code_is_refused(client: Client, onboarded: Installation) -> None:
    state = start_full_flow(client, onboarded)

    response = client.get(ENTRY, {"state": state, "error": "access_denied"})

    assert response.status_code == 403
    assert refusal_reason(response) == "invalid-code"


# ---------------------------------------------------------------------------
# Installations that may not be opened
# ---------------------------------------------------------------------------


def test_an_unknown_eshop_is_refused_without_asking_shoptet(
    client: Client, fake_shoptet: FakeShoptet, db: None
) -> None:
    response = client.get(ENTRY, {"eshopId": "999999", "code": "whatever"})

    assert response.status_code == 404
    assert refusal_reason(response) == "unknown-eshop"
    assert fake_shoptet.request_count(None, r".*") == 0


@pytest.mark.parametrize("eshop_id", ["abc", "-1", "1" * 30, "12 OR 1=1"])
def test_a_malformed_eshop_id_is_an_unknown_eshop(
    client: Client, fake_shoptet: FakeShoptet, db: None, eshop_id: str
) -> None:
    response = client.get(ENTRY, {"eshopId": eshop_id})

    assert response.status_code == 404
    assert refusal_reason(response) == "unknown-eshop"


def test_a_link_without_eshop_is_incomplete(client: Client, db: None) -> None:
    response = client.get(ENTRY)

    assert response.status_code == 400
    assert refusal_reason(response) == "incomplete-link"


@pytest.mark.parametrize(
    ("status", "http_status", "reason"),
    [
        (Installation.Status.SUSPENDED, 403, "suspended"),
        (Installation.Status.UNINSTALLED, 404, "not-installed"),
        (Installation.Status.TERMINATED, 404, "not-installed"),
    ],
)
def test_an_inactive_installation_is_refused(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation, status: str, http_status: int, reason: str
) -> None:
    onboarded.transition_to(status, cause="test")
    code = fake_shoptet.issue_admin_code(onboarded.eshop_id)

    with_code = client.get(ENTRY, {"eshopId": str(onboarded.eshop_id), "code": code})
    without_code = client.get(ENTRY, {"eshopId": str(onboarded.eshop_id)})

    assert (with_code.status_code, refusal_reason(with_code)) == (http_status, reason)
    assert (without_code.status_code, refusal_reason(without_code)) == (http_status, reason)
    assert token_calls(fake_shoptet, onboarded.eshop_id) == 0
    assert_nothing_stored()


@pytest.mark.parametrize(
    ("status", "http_status", "reason"),
    [(Installation.Status.SUSPENDED, 403, "suspended"), (Installation.Status.UNINSTALLED, 404, "not-installed")],
)
def test_a_session_ends_when_the_installation_stops_being_active(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation, status: str, http_status: int, reason: str
) -> None:
    login = log_in(client, fake_shoptet, onboarded)
    onboarded.transition_to(status, cause="test")

    response = client.get(login.url)

    assert (response.status_code, refusal_reason(response)) == (http_status, reason)


# ---------------------------------------------------------------------------
# The session token
# ---------------------------------------------------------------------------


def test_a_token_idle_for_longer_than_its_lifetime_is_refused(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation, monkeypatch: pytest.MonkeyPatch
) -> None:
    login = log_in(client, fake_shoptet, onboarded)
    admin = auth.read_token(login.token)
    signed_at = time.time() - auth.SESSION_IDLE_SECONDS - 5
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: signed_at)
        stale = auth.issue_token(admin)

    response = client.get("/addon/settings/overview/", login.query(t=stale))

    assert response.status_code == 403
    assert refusal_reason(response) == "session-expired"


def test_a_login_older_than_the_session_lifetime_is_refused_however_often_renewed(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation
) -> None:
    login = log_in(client, fake_shoptet, onboarded)
    admin = auth.read_token(login.token)
    renewed = auth.issue_token(
        auth.Admin(**{**admin.__dict__, "logged_in_at": int(time.time()) - auth.SESSION_LIFETIME_SECONDS - 5})
    )

    response = client.get("/addon/settings/overview/", login.query(t=renewed))

    assert response.status_code == 403
    assert refusal_reason(response) == "session-expired"


def test_every_page_hands_out_a_renewed_token_for_the_same_login(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation
) -> None:
    login = log_in(client, fake_shoptet, onboarded)

    page = client.get(login.url).content.decode()

    link = page.split('href="/addon/settings/deliveries/?')[1].split('"')[0].replace("&amp;", "&")
    renewed = auth.read_token(parse_qs(link)["t"][0])
    assert renewed == auth.read_token(login.token)


def test_a_token_encrypted_with_another_key_is_refused(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation
) -> None:
    login = log_in(client, fake_shoptet, onboarded)
    payload = crypto.decrypt(login.token)
    forged = Fernet(Fernet.generate_key()).encrypt(payload.encode()).decode()

    response = client.get("/addon/settings/overview/", login.query(t=forged))

    assert response.status_code == 403
    assert refusal_reason(response) == "invalid-session"


def test_a_tampered_token_is_refused(client: Client, fake_shoptet: FakeShoptet, onboarded: Installation) -> None:
    login = log_in(client, fake_shoptet, onboarded)
    raw = bytearray(base64.urlsafe_b64decode(login.token))
    raw[len(raw) // 2] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode()

    response = client.get("/addon/settings/overview/", login.query(t=tampered))

    assert response.status_code == 403
    assert refusal_reason(response) == "invalid-session"


def test_another_secret_under_the_same_keys_is_no_session(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation
) -> None:
    login = log_in(client, fake_shoptet, onboarded)
    payload = json.loads(crypto.decrypt(login.token))
    without_purpose = crypto.encrypt(json.dumps({key: value for key, value in payload.items() if key != "p"}))

    response = client.get("/addon/settings/overview/", login.query(t=without_purpose))

    assert response.status_code == 403
    assert refusal_reason(response) == "invalid-session"


def test_the_token_shows_neither_the_admins_email_nor_name(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation
) -> None:
    login = log_in(client, fake_shoptet, onboarded, email="jana.secret@eshop.example", name="Jana Tajna")
    page = client.get(login.url).content.decode()
    tokens = {login.token, *(part.split("&")[0].split('"')[0] for part in page.split("t=")[1:])}

    for token in tokens:
        for secret in ("jana.secret@eshop.example", "Jana Tajna"):
            assert secret.lower() not in token.lower()
            assert secret.encode() not in _decoded(token)


def _decoded(token: str) -> bytes:
    """The token's bytes however it is decoded: base64 (either alphabet), and zlib on top when it inflates."""
    found = b""
    for text in (token, *token.split(":"), *token.split(".")):
        padded = text + "=" * (-len(text) % 4)
        for decode in (base64.urlsafe_b64decode, base64.b64decode):
            try:
                raw = decode(padded)
            except ValueError:
                continue
            found += raw
            with contextlib.suppress(zlib.error):
                found += zlib.decompress(raw)
    return found
