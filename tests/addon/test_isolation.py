"""One admin's session shows and changes only their own installation, whatever is changed in the URL, the
form or the token; forms are protected without cookies; the page may be framed by Shoptet only."""

from __future__ import annotations

from datetime import date

import pytest
from django.test import Client

from addon import auth
from installations.models import AddonSettings, Installation, SettingsChange
from sync.models import SyncJob
from tests.addon.conftest import Login, form_fields, log_in, refusal_reason, tampered
from tests.fakes.shoptet import FakeShoptet

pytestmark = pytest.mark.django_db

PAGES = [
    "/addon/settings/overview/",
    "/addon/settings/progress/",
    "/addon/settings/deliveries/",
    "/addon/settings/preferences/",
]
RESYNC = "/addon/settings/resync/"
PREFERENCES = "/addon/settings/preferences/"
SHOPTET_ORIGINS = "https://*.myshoptet.com https://*.shoptet.cz https://*.shoptet.sk https://*.shoptet.hu"


def actions() -> list[tuple[str, dict[str, str]]]:
    """Every form the page posts, with values that would change something if accepted."""
    return [
        (RESYNC, {"resource": "orders", "mode": "snapshot"}),
        (PREFERENCES, {"sync_invoices": "on", "import_since": "2024-01-01", "notification_email": "x@example.com"}),
    ]


@pytest.fixture
def two_logins(client: Client, fake_shoptet: FakeShoptet, onboarded: Installation, other_onboarded: Installation):  # type: ignore[no-untyped-def]
    return log_in(client, fake_shoptet, onboarded), log_in(client, fake_shoptet, other_onboarded)


def state_of_everything() -> tuple[list[tuple[object, ...]], ...]:
    """What a refused action must leave as it was, for both e-shops."""
    return (
        list(SyncJob.objects.order_by("pk").values_list("installation_id", "resource", "mode", "status")),
        list(
            AddonSettings.objects.order_by("pk").values_list(
                "installation_id", "sync_orders", "sync_invoices", "import_since", "notification_email"
            )
        ),
        list(SettingsChange.objects.order_by("pk").values_list("installation_id", "field", "new_value")),
    )


@pytest.fixture
def prepared(two_logins: tuple[Login, Login], client: Client) -> tuple[Login, Login]:
    """Both e-shops have saved their settings, so a refused change can be seen not to happen."""
    for login in two_logins:
        response = client.post(PREFERENCES, form_fields(login, sync_orders="on", sync_invoices="on"))
        assert response.status_code == 302
    assert AddonSettings.objects.count() == 2
    assert SettingsChange.objects.count() == 0
    return two_logins


# ---------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_each_page_shows_the_tokens_eshop(
    client: Client, two_logins: tuple[Login, Login], onboarded: Installation, other_onboarded: Installation, page: str
) -> None:
    mine, _ = two_logins

    response = client.get(page, mine.query())

    assert response.status_code == 200
    if page != "/addon/settings/progress/":
        assert onboarded.name in response.content.decode()
    assert other_onboarded.name not in response.content.decode()
    assert f"eshopId={other_onboarded.eshop_id}" not in response.content.decode()


@pytest.mark.parametrize("page", PAGES)
def test_changing_the_eshop_in_the_url_is_refused_on_every_page(
    client: Client, two_logins: tuple[Login, Login], other_onboarded: Installation, page: str
) -> None:
    mine, _ = two_logins

    response = client.get(page, mine.query(eshopId=str(other_onboarded.eshop_id)))

    assert response.status_code == 403
    assert refusal_reason(response) == "invalid-session"
    assert other_onboarded.name not in response.content.decode()


@pytest.mark.parametrize("page", PAGES)
def test_naming_a_second_eshop_in_the_url_is_refused_on_every_page(
    client: Client, two_logins: tuple[Login, Login], onboarded: Installation, other_onboarded: Installation, page: str
) -> None:
    mine, _ = two_logins

    response = client.get(f"{page}?eshopId={onboarded.eshop_id}&eshopId={other_onboarded.eshop_id}&t={mine.token}")

    assert response.status_code == 403
    assert refusal_reason(response) == "invalid-session"


@pytest.mark.parametrize("page", PAGES)
def test_a_page_without_the_eshop_is_refused(client: Client, two_logins: tuple[Login, Login], page: str) -> None:
    mine, _ = two_logins

    response = client.get(page, {"t": mine.token})

    assert response.status_code == 403
    assert refusal_reason(response) == "invalid-session"


@pytest.mark.parametrize("page", PAGES)
def test_another_eshops_token_is_refused_on_every_page(
    client: Client, two_logins: tuple[Login, Login], onboarded: Installation, other_onboarded: Installation, page: str
) -> None:
    mine, theirs = two_logins

    response = client.get(page, mine.query(t=theirs.token))

    assert response.status_code == 403
    assert refusal_reason(response) == "invalid-session"
    assert onboarded.name not in response.content.decode()
    assert other_onboarded.name not in response.content.decode()


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("token", ["", "garbage", "tampered"])
def test_a_missing_or_tampered_token_is_refused_on_every_page(
    client: Client, two_logins: tuple[Login, Login], page: str, token: str
) -> None:
    mine, _ = two_logins
    if token == "tampered":
        token = tampered(mine.token)

    response = client.get(page, mine.query(t=token))

    assert response.status_code == 403
    assert refusal_reason(response) == "invalid-session"


def test_a_token_is_never_taken_from_a_cookie(client: Client, two_logins: tuple[Login, Login]) -> None:
    mine, _ = two_logins
    client.cookies["t"] = mine.token

    response = client.get("/addon/settings/overview/", {"eshopId": str(mine.eshop_id)})

    assert response.status_code == 403


# ---------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "values"), actions())
def test_each_action_changes_only_the_tokens_eshop(
    client: Client,
    prepared: tuple[Login, Login],
    onboarded: Installation,
    other_onboarded: Installation,
    path: str,
    values: dict[str, str],
) -> None:
    mine, _ = prepared
    theirs_before = (
        list(SyncJob.objects.filter(installation=other_onboarded).values_list("pk", flat=True)),
        AddonSettings.objects.filter(installation=other_onboarded).values().get(),
    )

    response = client.post(path, form_fields(mine, **values))

    assert response.status_code == 302
    theirs_after = (
        list(SyncJob.objects.filter(installation=other_onboarded).values_list("pk", flat=True)),
        AddonSettings.objects.filter(installation=other_onboarded).values().get(),
    )
    assert theirs_after == theirs_before
    assert SettingsChange.objects.filter(installation=other_onboarded).count() == 0
    if path == RESYNC:
        assert list(SyncJob.objects.values_list("installation_id", "resource", "mode")) == [
            (onboarded.pk, "orders", "snapshot")
        ]
    else:
        mine_now = AddonSettings.objects.get(installation=onboarded)
        assert (mine_now.sync_orders, mine_now.sync_invoices, mine_now.import_since, mine_now.notification_email) == (
            False,
            True,
            date(2024, 1, 1),
            "x@example.com",
        )


@pytest.mark.parametrize(("path", "values"), actions())
def test_changing_the_eshop_in_the_form_is_refused_and_changes_nothing(
    client: Client, prepared: tuple[Login, Login], other_onboarded: Installation, path: str, values: dict[str, str]
) -> None:
    mine, _ = prepared
    before = state_of_everything()

    response = client.post(path, form_fields(mine, eshopId=str(other_onboarded.eshop_id), **values))

    assert response.status_code == 403
    assert refusal_reason(response) == "invalid-session"
    assert state_of_everything() == before


@pytest.mark.parametrize(("path", "values"), actions())
def test_naming_another_eshop_in_the_action_url_is_refused_and_changes_nothing(
    client: Client, prepared: tuple[Login, Login], other_onboarded: Installation, path: str, values: dict[str, str]
) -> None:
    mine, _ = prepared
    before = state_of_everything()

    response = client.post(f"{path}?eshopId={other_onboarded.eshop_id}", form_fields(mine, **values))

    assert response.status_code == 403
    assert state_of_everything() == before


@pytest.mark.parametrize(("path", "values"), actions())
def test_another_eshops_token_in_the_form_is_refused_and_changes_nothing(
    client: Client, prepared: tuple[Login, Login], path: str, values: dict[str, str]
) -> None:
    mine, theirs = prepared
    before = state_of_everything()

    response = client.post(path, form_fields(mine, t=theirs.token, **values))

    assert response.status_code == 403
    assert refusal_reason(response) == "invalid-session"
    assert state_of_everything() == before


@pytest.mark.parametrize(("path", "values"), actions())
def test_a_tampered_token_in_the_form_is_refused_and_changes_nothing(
    client: Client, prepared: tuple[Login, Login], path: str, values: dict[str, str]
) -> None:
    mine, _ = prepared
    before = state_of_everything()

    response = client.post(path, form_fields(mine, t=tampered(mine.token), **values))

    assert response.status_code == 403
    assert state_of_everything() == before


# ---------------------------------------------------------------------------
# Forms without cookies (CSRF)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "values"), actions())
def test_forms_work_without_any_cookie(
    fake_shoptet: FakeShoptet, onboarded: Installation, path: str, values: dict[str, str]
) -> None:
    """Inside Shoptet's iframe the browser may keep no cookie, Django's CSRF cookie included."""
    browser = Client(enforce_csrf_checks=True)
    login = log_in(browser, fake_shoptet, onboarded)
    browser.cookies.clear()

    response = browser.post(path, form_fields(login, **values))

    assert response.status_code == 302
    assert not response.cookies


@pytest.mark.parametrize(("path", "values"), actions())
@pytest.mark.parametrize("form_token", ["", "0" * 64, "other-login"])
def test_a_post_without_this_logins_form_token_is_refused_and_changes_nothing(
    client: Client,
    fake_shoptet: FakeShoptet,
    prepared: tuple[Login, Login],
    onboarded: Installation,
    path: str,
    values: dict[str, str],
    form_token: str,
) -> None:
    mine, _ = prepared
    if form_token == "other-login":
        # The same admin of the same e-shop, logged in a second time: still not this login's form.
        form_token = auth.form_token(auth.read_token(log_in(client, fake_shoptet, onboarded).token))
    before = state_of_everything()

    response = client.post(path, form_fields(mine, csrf=form_token, **values))

    assert response.status_code == 403
    assert refusal_reason(response) == "invalid-form"
    assert state_of_everything() == before


@pytest.mark.parametrize(("path", "values"), actions())
def test_a_post_from_another_origin_is_refused_and_changes_nothing(
    client: Client, prepared: tuple[Login, Login], path: str, values: dict[str, str]
) -> None:
    mine, _ = prepared
    before = state_of_everything()

    response = client.post(path, form_fields(mine, **values), headers={"Origin": "https://attacker.example"})

    assert response.status_code == 403
    assert refusal_reason(response) == "invalid-form"
    assert state_of_everything() == before


@pytest.mark.parametrize(("path", "values"), actions())
def test_a_post_from_the_page_itself_is_accepted(
    client: Client, prepared: tuple[Login, Login], path: str, values: dict[str, str]
) -> None:
    mine, _ = prepared

    response = client.post(path, form_fields(mine, **values), headers={"Origin": "http://testserver"})

    assert response.status_code == 302


@pytest.mark.parametrize(("path", "values"), actions())
def test_a_post_with_the_token_only_in_the_url_is_refused(
    client: Client, prepared: tuple[Login, Login], path: str, values: dict[str, str]
) -> None:
    """Links carry the session token in their URL; a form must carry its own copy in the body."""
    mine, _ = prepared
    before = state_of_everything()
    fields = form_fields(mine, **values)
    del fields["t"]

    response = client.post(f"{path}?t={mine.token}", fields)

    assert response.status_code == 403
    assert state_of_everything() == before


@pytest.mark.parametrize("path", [RESYNC])
def test_an_action_cannot_be_triggered_with_get(client: Client, prepared: tuple[Login, Login], path: str) -> None:
    mine, _ = prepared
    before = state_of_everything()

    response = client.get(path, {**form_fields(mine), "resource": "orders", "mode": "snapshot"})

    assert response.status_code == 405
    assert state_of_everything() == before


# ---------------------------------------------------------------------------
# Headers
# ---------------------------------------------------------------------------


def assert_framable_by_shoptet_only(response, eshop_origin: str | None) -> None:  # type: ignore[no-untyped-def]
    assert "X-Frame-Options" not in response
    ancestors = f"{eshop_origin} {SHOPTET_ORIGINS}" if eshop_origin else SHOPTET_ORIGINS
    assert response["Content-Security-Policy"] == (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        f"form-action 'self'; base-uri 'none'; frame-ancestors {ancestors}"
    )
    assert response["Cache-Control"] == "no-store, private"
    assert response["Referrer-Policy"] == "same-origin"
    assert "Set-Cookie" not in response
    assert not response.cookies


@pytest.mark.parametrize("page", PAGES)
def test_pages_may_be_framed_by_the_eshop_and_shoptet_only(
    client: Client, fake_shoptet: FakeShoptet, two_logins: tuple[Login, Login], page: str
) -> None:
    mine, _ = two_logins

    response = client.get(page, mine.query())

    assert response.status_code == 200
    assert_framable_by_shoptet_only(response, fake_shoptet.url)


def test_the_entry_and_its_redirects_carry_the_same_headers(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation
) -> None:
    to_authorize = client.get("/addon/settings/", {"eshopId": str(onboarded.eshop_id)})
    code = fake_shoptet.issue_admin_code(onboarded.eshop_id)
    to_overview = client.get("/addon/settings/", {"eshopId": str(onboarded.eshop_id), "code": code})

    assert to_authorize.status_code == to_overview.status_code == 302
    assert_framable_by_shoptet_only(to_authorize, None)
    assert_framable_by_shoptet_only(to_overview, fake_shoptet.url)


def test_refusals_may_be_framed_too_so_the_admin_reads_why(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation
) -> None:
    known = client.get("/addon/settings/", {"eshopId": str(onboarded.eshop_id), "code": "invalid"})
    unknown = client.get("/addon/settings/", {"eshopId": "1", "code": "invalid"})

    assert (known.status_code, unknown.status_code) == (403, 404)
    assert_framable_by_shoptet_only(known, fake_shoptet.url)
    assert_framable_by_shoptet_only(unknown, None)


def test_an_eshop_url_that_is_no_plain_origin_never_reaches_the_header(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation
) -> None:
    Installation.objects.filter(pk=onboarded.pk).update(eshop_url="https://shop.example; script-src *")

    response = client.get("/addon/settings/", {"eshopId": str(onboarded.eshop_id), "code": "invalid"})

    assert_framable_by_shoptet_only(response, None)


def test_other_pages_still_refuse_to_be_framed(client: Client, db: None) -> None:
    assert client.get("/admin/login/")["X-Frame-Options"] == "DENY"
