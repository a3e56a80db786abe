"""The install callback: Shoptet's GET with a one-time code, answered within 5 s."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from django.test import Client

from installations import services
from installations.models import Installation, InstallAttempt, StatusChange
from shoptet_api import tokens
from tests.conftest import ESHOP_ID, OTHER_ESHOP_ID, install_via_fake
from tests.fakes.shoptet import FakeShoptet

pytestmark = pytest.mark.django_db

INSTALL_URL = "/shoptet/install/"
TOKEN_PATH = r"/partner/action/ApiOAuthServer/token"


def issue_code(fake: FakeShoptet, eshop_id: int = ESHOP_ID) -> str:
    if eshop_id not in fake.eshops:
        fake.add_eshop(eshop_id)
    return fake.issue_install_code(eshop_id, redirect_uri=tokens.install_redirect_uri())


def assert_nothing_installed() -> None:
    assert Installation.objects.count() == 0
    assert StatusChange.objects.count() == 0


def test_install_stores_the_oauth_token_and_answers_200(client: Client, fake_shoptet: FakeShoptet) -> None:
    code = issue_code(fake_shoptet)

    response = client.get(INSTALL_URL, {"code": code})

    assert response.status_code == 200
    assert response.json() == {"installed": True, "eshopId": ESHOP_ID, "reinstalled": False}
    installation = Installation.objects.get()
    assert installation.eshop_id == ESHOP_ID
    assert installation.oauth_token == fake_shoptet.eshops[ESHOP_ID].oauth_token
    assert installation.status == Installation.Status.ACTIVE
    assert installation.onboarding_status == Installation.Onboarding.PENDING
    assert installation.eshop_url == f"{fake_shoptet.url}/eshops/{ESHOP_ID}/"
    assert list(installation.status_changes.values_list("to_status", "cause")) == [("active", "install callback")]
    attempt = InstallAttempt.objects.get()
    assert (attempt.outcome, attempt.eshop_id, attempt.error) == ("installed", ESHOP_ID, "")
    assert attempt.code_fingerprint and attempt.code_fingerprint not in code


def test_reinstall_updates_the_same_row_and_reactivates(client: Client, fake_shoptet: FakeShoptet) -> None:
    first = install_via_fake(fake_shoptet, ESHOP_ID)
    first.webhook_signature_key = "old-key"
    first.onboarding_status = Installation.Onboarding.DONE
    first.save()
    first.transition_to(Installation.Status.UNINSTALLED, cause="webhook addon:uninstall")

    response = client.get(INSTALL_URL, {"code": issue_code(fake_shoptet)})

    assert response.status_code == 200
    assert response.json()["reinstalled"] is True
    installation = Installation.objects.get()
    assert installation.pk == first.pk
    assert installation.oauth_token == fake_shoptet.eshops[ESHOP_ID].oauth_token != first.oauth_token
    assert installation.status == Installation.Status.ACTIVE
    assert installation.webhook_signature_key == ""
    assert installation.onboarding_status == Installation.Onboarding.PENDING
    assert list(installation.status_changes.order_by("id").values_list("to_status", "cause")) == [
        ("active", "install callback"),
        ("uninstalled", "webhook addon:uninstall"),
        ("active", "reinstall callback"),
    ]
    assert list(InstallAttempt.objects.order_by("id").values_list("outcome", flat=True)) == ["installed", "reinstalled"]


STATE_STAMPS = ("suspended_at", "uninstalled_at", "terminated_at")


def iso(moment: datetime | None) -> str | None:
    """A time as the REST API writes it."""
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def set_stamps(installation: Installation) -> set[str]:
    return {name for name in STATE_STAMPS if getattr(installation, name) is not None}


def history(installation: Installation) -> list[tuple[str, str, str]]:
    return list(installation.status_changes.order_by("id").values_list("from_status", "to_status", "cause"))


def expected_transitions(steps: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """The history rows that the life-cycle services write for `steps`, starting from active."""
    status_after = {"suspend": "suspended", "uninstall": "uninstalled", "terminate": "terminated"}
    transitions, previous = [], "active"
    for step in steps:
        transitions.append((previous, status_after[step], f"addon:{step}"))
        previous = status_after[step]
    return transitions


@pytest.mark.parametrize(
    ("ended_by", "stamps_while_ended"),
    [
        (("uninstall",), {"uninstalled_at"}),
        (("suspend", "uninstall"), {"uninstalled_at"}),
        (("uninstall", "terminate"), {"uninstalled_at", "terminated_at"}),
        (("suspend", "terminate"), {"terminated_at"}),
    ],
)
def test_reinstall_clears_the_stamps_of_the_ended_installation(
    client: Client,
    staff_client: Client,
    fake_shoptet: FakeShoptet,
    other_installation: Installation,
    ended_by: tuple[str, ...],
    stamps_while_ended: set[str],
) -> None:
    assert client.get(INSTALL_URL, {"code": issue_code(fake_shoptet)}).status_code == 200
    for step in ended_by:
        getattr(services, step)(installation=Installation.objects.get(eshop_id=ESHOP_ID), cause=f"addon:{step}")
    fake_shoptet.uninstall(ESHOP_ID, send_system_webhook=False)
    ended = Installation.objects.get(eshop_id=ESHOP_ID)
    assert set_stamps(ended) == stamps_while_ended
    assert staff_client.get(f"/api/v1/installations/{ESHOP_ID}/").json()["uninstalled_at"] == iso(ended.uninstalled_at)
    other_before = staff_client.get(f"/api/v1/installations/{OTHER_ESHOP_ID}/").json()

    response = client.get(INSTALL_URL, {"code": issue_code(fake_shoptet)})

    assert (response.status_code, response.json()["reinstalled"]) == (200, True)
    installation = Installation.objects.get(eshop_id=ESHOP_ID)
    assert set_stamps(installation) == set()
    assert installation.installed_at == installation.status_changed_at > ended.status_changed_at
    body = staff_client.get(f"/api/v1/installations/{ESHOP_ID}/").json()
    assert (body["status"], body["installed_at"], body["uninstalled_at"]) == (
        "active",
        iso(installation.installed_at),
        None,
    )
    assert history(installation) == [
        ("", "active", "install callback"),
        *expected_transitions(ended_by),
        (ended.status, "active", "reinstall callback"),
    ]
    assert staff_client.get(f"/api/v1/installations/{OTHER_ESHOP_ID}/").json() == other_before


def test_approval_clears_the_suspension_and_keeps_the_installation_time(
    client: Client, staff_client: Client, fake_shoptet: FakeShoptet
) -> None:
    assert client.get(INSTALL_URL, {"code": issue_code(fake_shoptet)}).status_code == 200
    services.suspend(installation=Installation.objects.get(), cause="addon:suspend")
    suspended = Installation.objects.get()
    assert suspended.suspended_at == suspended.status_changed_at

    services.approve(installation=suspended, cause="addon:approve")

    installation = Installation.objects.get()
    assert (installation.status, set_stamps(installation)) == ("active", set())
    assert installation.installed_at == suspended.installed_at < installation.status_changed_at
    assert staff_client.get(f"/api/v1/installations/{ESHOP_ID}/").json()["installed_at"] == iso(suspended.installed_at)
    assert history(installation) == [
        ("", "active", "install callback"),
        ("active", "suspended", "addon:suspend"),
        ("suspended", "active", "addon:approve"),
    ]


def test_install_without_code_is_refused(client: Client, fake_shoptet: FakeShoptet) -> None:
    response = client.get(INSTALL_URL)

    assert response.status_code == 400
    assert response.json() == {"installed": False, "error": "The install request carries no code."}
    assert_nothing_installed()
    assert InstallAttempt.objects.get().outcome == "failed"


def test_reused_code_is_refused_and_changes_nothing(client: Client, fake_shoptet: FakeShoptet) -> None:
    code = issue_code(fake_shoptet)
    assert client.get(INSTALL_URL, {"code": code}).status_code == 200
    stored = Installation.objects.get()

    response = client.get(INSTALL_URL, {"code": code})

    assert response.status_code == 400
    assert "invalid_grant" in response.json()["error"]
    assert Installation.objects.get().oauth_token == stored.oauth_token
    assert Installation.objects.get().updated_at == stored.updated_at
    assert list(InstallAttempt.objects.order_by("id").values_list("outcome", flat=True)) == ["installed", "failed"]


@pytest.mark.parametrize(
    "code",
    ["not-a-code", "' OR 1=1 --", "<script>alert(1)</script>", "%00", "a" * 300],
    ids=["unknown", "sql", "html", "nul", "long-unknown"],
)
def test_invalid_codes_are_refused(client: Client, fake_shoptet: FakeShoptet, code: str) -> None:
    response = client.get(INSTALL_URL, {"code": code})

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert_nothing_installed()
    assert InstallAttempt.objects.get().outcome == "failed"


def test_oversized_and_binary_codes_never_reach_shoptet(client: Client, fake_shoptet: FakeShoptet) -> None:
    for code in ["x" * 5000, "code\u0000with-nul", "kód-s-diakritikou"]:
        response = client.get(INSTALL_URL, {"code": code})
        assert response.status_code == 400
        assert response.json()["error"] == "The install code is malformed."

    assert fake_shoptet.request_count("POST", TOKEN_PATH) == 0
    assert_nothing_installed()


def test_shoptet_error_body_is_refused(client: Client, fake_shoptet: FakeShoptet) -> None:
    code = issue_code(fake_shoptet)
    fake_shoptet.add_fault("POST", TOKEN_PATH, 500, body={"error": "server_error", "error_description": "db down"})

    response = client.get(INSTALL_URL, {"code": code})

    assert response.status_code == 400
    assert response.json()["error"] == "Shoptet refused the install code (server_error: db down)."
    assert_nothing_installed()


def test_exchange_timeout_answers_within_five_seconds(client: Client, fake_shoptet: FakeShoptet) -> None:
    code = issue_code(fake_shoptet)
    fake_shoptet.add_fault("POST", TOKEN_PATH, 0, delay=6.0)

    started = time.monotonic()
    response = client.get(INSTALL_URL, {"code": code})
    elapsed = time.monotonic() - started

    assert response.status_code == 504
    assert response.json()["error"] == "The code could not be exchanged: Shoptet's OAuth server did not answer in time."
    assert elapsed < 5
    assert_nothing_installed()
    assert InstallAttempt.objects.get().outcome == "failed"


def test_non_json_answer_is_refused(client: Client, fake_shoptet: FakeShoptet) -> None:
    code = issue_code(fake_shoptet)
    fake_shoptet.add_fault("POST", TOKEN_PATH, 200, body="<html>Maintenance</html>")

    response = client.get(INSTALL_URL, {"code": code})

    assert response.status_code == 502
    assert "not JSON" in response.json()["error"]
    assert_nothing_installed()


def test_answer_without_eshop_id_is_refused(client: Client, fake_shoptet: FakeShoptet) -> None:
    code = issue_code(fake_shoptet)
    fake_shoptet.add_fault("POST", TOKEN_PATH, 200, body={"access_token": "x" * 255, "eshopId": "abc"})

    response = client.get(INSTALL_URL, {"code": code})

    assert response.status_code == 502
    assert_nothing_installed()


def test_failed_reinstall_keeps_the_existing_tenant(client: Client, fake_shoptet: FakeShoptet) -> None:
    existing = install_via_fake(fake_shoptet, ESHOP_ID)

    response = client.get(INSTALL_URL, {"code": "stale-code"})

    assert response.status_code == 400
    reloaded = Installation.objects.get()
    assert (reloaded.oauth_token, reloaded.status, reloaded.updated_at) == (
        existing.oauth_token,
        existing.status,
        existing.updated_at,
    )


def test_install_accepts_only_get(client: Client, fake_shoptet: FakeShoptet) -> None:
    assert client.post(INSTALL_URL, {"code": issue_code(fake_shoptet)}).status_code == 405
    assert_nothing_installed()


def test_second_eshop_gets_its_own_row(fake_shoptet: FakeShoptet) -> None:
    first = install_via_fake(fake_shoptet, ESHOP_ID)
    second = install_via_fake(fake_shoptet, 315185)

    assert first.pk != second.pk
    assert Installation.objects.get(eshop_id=ESHOP_ID).oauth_token == fake_shoptet.eshops[ESHOP_ID].oauth_token
    assert Installation.objects.get(eshop_id=315185).oauth_token == fake_shoptet.eshops[315185].oauth_token


def test_reinstall_heals_a_row_under_a_dropped_key(client: Client, fake_shoptet: FakeShoptet, settings) -> None:  # type: ignore[no-untyped-def]
    from cryptography.fernet import Fernet

    install_via_fake(fake_shoptet, ESHOP_ID)
    settings.TOKEN_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    response = client.get(INSTALL_URL, {"code": issue_code(fake_shoptet)})

    assert response.status_code == 200
    assert Installation.objects.get().oauth_token == fake_shoptet.eshops[ESHOP_ID].oauth_token
