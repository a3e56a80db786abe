"""Session tokens, OAuth codes and states never reach a log line, whatever a settings page answers.

Django logs every 4xx and 5xx (`django.request`) with the request, whose text is the full URL; the token in
`t=` opened the settings page for whoever read the log. Each page is made to fail with 403, 404 and 500,
and both the captured records and the lines the configured handlers write are searched for the secrets.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from django.db import connection, transaction
from django.test import Client

from installations.models import Installation
from tests.addon.conftest import Login, form_fields, log_in
from tests.fakes.shoptet import FakeShoptet

pytestmark = pytest.mark.django_db

ENTRY = "/addon/settings/"
# (method, path) of every page behind the session token.
PAGES = [
    ("get", "/addon/settings/overview/"),
    ("get", "/addon/settings/progress/"),
    ("get", "/addon/settings/deliveries/"),
    ("get", "/addon/settings/preferences/"),
    ("post", "/addon/settings/preferences/"),
    ("post", "/addon/settings/resync/"),
]
STATUSES = [403, 404, 500]


@pytest.fixture
def written() -> Iterator[io.StringIO]:
    """What the handlers configured in settings LOGGING write, with their own filters and formatters."""
    buffer = io.StringIO()
    handlers = [handler for handler in logging.getLogger().handlers if isinstance(handler, logging.StreamHandler)]
    assert handlers
    previous = [handler.setStream(buffer) for handler in handlers]
    yield buffer
    for handler, stream in zip(handlers, previous, strict=True):
        handler.setStream(stream)


@pytest.fixture
def failing_client() -> Client:
    """A client that gets the 500 page, as a browser does, instead of the view's exception."""
    return Client(raise_request_exception=False)


def break_installations_table() -> None:
    """Every page reads the installation first; without its table each one answers 500 (rolled back after)."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE installations_installation RENAME TO installations_installation_gone")


def forms_of(secret: str) -> list[str]:
    return [secret, quote(secret, safe=""), secret[-24:]]


def assert_not_logged(secrets: list[str], caplog: pytest.LogCaptureFixture, written: io.StringIO) -> None:
    records = [record for record in caplog.records if record.name.startswith("django")]
    assert records, "the failure was logged"
    texts = [caplog.text, written.getvalue()]
    for record in caplog.records:
        texts.append(record.getMessage())
        texts.extend(repr(value) for value in vars(record).values())
    logged = "\n".join(texts)
    for secret in secrets:
        for form in forms_of(secret):
            assert form not in logged


def request(client: Client, method: str, path: str, login: Login, **changes: str) -> int:
    """The page asked as the page itself asks: links carry the token in the URL, forms in the body."""
    if method == "get":
        return client.get(path, login.query(**changes)).status_code
    fields = form_fields(login, **changes)
    # The token in the action's query string too: it must not be logged from there either.
    return client.post(f"{path}?t={quote(login.token)}", fields).status_code


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize(("method", "path"), PAGES)
def test_a_failing_page_logs_no_token(
    failing_client: Client,
    fake_shoptet: FakeShoptet,
    onboarded: Installation,
    other_onboarded: Installation,
    caplog: pytest.LogCaptureFixture,
    written: io.StringIO,
    method: str,
    path: str,
    status: int,
) -> None:
    login = log_in(failing_client, fake_shoptet, onboarded)
    csrf = form_fields(login)["csrf"]
    caplog.clear()
    with caplog.at_level(logging.INFO), transaction.atomic():
        if status == 403:  # the token is genuine, the e-shop in the URL or form is another one
            answered = request(failing_client, method, path, login, eshopId=str(other_onboarded.eshop_id))
        elif status == 404:  # the installation the token names is gone
            Installation.objects.filter(pk=onboarded.pk).delete()
            answered = request(failing_client, method, path, login)
        else:
            break_installations_table()
            answered = request(failing_client, method, path, login)
        transaction.set_rollback(True)

    assert answered == status
    assert_not_logged([login.token, csrf], caplog, written)


@pytest.mark.parametrize("status", STATUSES)
def test_a_failing_entry_logs_no_code_or_state(
    failing_client: Client,
    fake_shoptet: FakeShoptet,
    onboarded: Installation,
    caplog: pytest.LogCaptureFixture,
    written: io.StringIO,
    status: int,
) -> None:
    to_authorize = failing_client.get(ENTRY, {"eshopId": str(onboarded.eshop_id)})
    state = parse_qs(urlsplit(to_authorize["Location"]).query)["state"][0]
    code = fake_shoptet.issue_admin_code(onboarded.eshop_id)
    query = {"eshopId": str(onboarded.eshop_id), "code": code, "state": state}
    caplog.clear()
    with caplog.at_level(logging.INFO), transaction.atomic():
        if status == 403:  # the code is good but the state was spent
            assert failing_client.get(ENTRY, query).status_code == 302
            answered = failing_client.get(ENTRY, query).status_code
        elif status == 404:
            answered = failing_client.get(ENTRY, {**query, "eshopId": "999999", "state": ""}).status_code
        else:
            break_installations_table()
            answered = failing_client.get(ENTRY, {**query, "state": ""}).status_code
        transaction.set_rollback(True)

    assert answered == status
    assert_not_logged([code, state], caplog, written)


def test_an_unknown_settings_path_logs_no_token(
    failing_client: Client,
    fake_shoptet: FakeShoptet,
    onboarded: Installation,
    caplog: pytest.LogCaptureFixture,
    written: io.StringIO,
) -> None:
    login = log_in(failing_client, fake_shoptet, onboarded)
    caplog.clear()

    with caplog.at_level(logging.INFO):
        assert failing_client.get("/addon/settings/nowhere/", login.query()).status_code == 404

    assert_not_logged([login.token], caplog, written)
