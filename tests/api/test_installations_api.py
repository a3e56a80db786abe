"""REST API v1: installations, staff-only, paginated, one error body."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from installations import services
from installations.models import Installation
from tests.conftest import ESHOP_ID, OTHER_ESHOP_ID

pytestmark = pytest.mark.django_db

LIST = "/api/v1/installations/"


def test_lists_every_installation_with_the_interface_fields(
    staff_client: Client, installation: Installation, other_installation: Installation
) -> None:
    services.onboard(installation=installation)

    response = staff_client.get(LIST)

    assert response.status_code == 200
    body = response.json()
    assert (body["count"], body["next"], body["previous"]) == (2, None, None)
    first = body["results"][0]
    assert set(first) == {
        "eshop_id",
        "eshop_url",
        "name",
        "contact_email",
        "status",
        "installed_at",
        "uninstalled_at",
        "webhooks_registered",
        "last_webhook_at",
    }
    assert [row["eshop_id"] for row in body["results"]] == [ESHOP_ID, OTHER_ESHOP_ID]
    assert "job:finished" in first["webhooks_registered"]
    assert body["results"][1]["webhooks_registered"] == []


def test_detail_shows_one_installation(
    staff_client: Client, installation: Installation, other_installation: Installation
) -> None:
    response = staff_client.get(f"{LIST}{OTHER_ESHOP_ID}/")

    assert response.status_code == 200
    assert response.json()["eshop_id"] == OTHER_ESHOP_ID
    assert response.json()["status"] == "active"


def test_unknown_eshop_is_404(staff_client: Client, installation: Installation) -> None:
    response = staff_client.get(f"{LIST}999999/")

    assert response.status_code == 404
    assert response.json() == {
        "error": "not_found",
        "message": "No Installation matches the given query.",
        "details": None,
    }


@pytest.mark.parametrize("eshop_id", ["abc", "-1", "1%27%20OR%201=1", "9" * 40])
def test_malformed_eshop_ids_are_404(staff_client: Client, installation: Installation, eshop_id: str) -> None:
    assert staff_client.get(f"{LIST}{eshop_id}/").status_code == 404


def test_status_filter(staff_client: Client, installation: Installation, other_installation: Installation) -> None:
    other_installation.transition_to(Installation.Status.SUSPENDED, cause="test")

    response = staff_client.get(LIST, {"status": "suspended"})

    assert [row["eshop_id"] for row in response.json()["results"]] == [OTHER_ESHOP_ID]


def test_bad_status_filter_is_400(staff_client: Client, installation: Installation) -> None:
    response = staff_client.get(LIST, {"status": "deleted"})

    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert response.json()["message"].startswith("status: must be one of active")


def test_pagination(staff_client: Client, installation: Installation, other_installation: Installation) -> None:
    first_page = staff_client.get(LIST, {"page_size": 1}).json()
    second_page = staff_client.get(LIST, {"page_size": 1, "page": 2}).json()

    assert first_page["count"] == 2
    assert [row["eshop_id"] for row in first_page["results"]] == [ESHOP_ID]
    assert first_page["next"].endswith("page=2&page_size=1")
    assert [row["eshop_id"] for row in second_page["results"]] == [OTHER_ESHOP_ID]
    assert staff_client.get(LIST, {"page": 3, "page_size": 1}).status_code == 404
    assert staff_client.get(LIST, {"page_size": 100000}).status_code == 200


def test_missing_token_is_401(client: Client, installation: Installation) -> None:
    response = client.get(LIST)

    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"


def test_wrong_token_is_401(installation: Installation) -> None:
    response = Client(HTTP_AUTHORIZATION="Token 0123456789abcdef0123456789abcdef01234567").get(LIST)

    assert response.status_code == 401
    assert response.json() == {"error": "authentication_failed", "message": "Invalid token.", "details": None}


def test_non_staff_users_are_refused(django_user_model, installation: Installation) -> None:  # type: ignore[no-untyped-def]
    user = django_user_model.objects.create_user("merchant", password="unused-password-1")
    token = Token.objects.create(user=user)

    response = Client(HTTP_AUTHORIZATION=f"Token {token.key}").get(LIST)

    assert response.status_code == 403


def test_the_api_is_read_only(staff_client: Client, installation: Installation) -> None:
    assert staff_client.post(LIST, {"eshop_id": 1}).status_code == 405
    assert staff_client.delete(f"{LIST}{ESHOP_ID}/").status_code == 405
    assert Installation.objects.count() == 1


def test_no_secret_in_the_api(staff_client: Client, installation: Installation) -> None:
    body = staff_client.get(f"{LIST}{ESHOP_ID}/").content.decode()

    assert installation.oauth_token not in body
    assert "oauth_token" not in body
