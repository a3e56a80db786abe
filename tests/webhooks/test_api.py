"""GET /api/v1/webhook-deliveries/: the delivery log for staff tools."""

from __future__ import annotations

import hashlib

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from installations.models import Installation
from tests.webhooks.conftest import body_for, post, post_signed, process_all
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db

URL = "/api/v1/webhook-deliveries/"


@pytest.fixture
def log(client: Client, onboarded: Installation, other_onboarded: Installation) -> list[WebhookDelivery]:
    post_signed(client, onboarded, "order:update", "2024000001")
    post_signed(client, onboarded, "invoice:create", "FA-1")
    post(client, body_for(onboarded.eshop_id, "order:update", "forged"), "0" * 40)
    post_signed(client, other_onboarded, "order:update", "2024000001")
    process_all()
    return list(WebhookDelivery.objects.order_by("pk"))


def test_the_log_newest_first_with_the_interface_fields(staff_client: Client, log: list[WebhookDelivery]) -> None:
    response = staff_client.get(URL)

    assert response.status_code == 200
    body = response.json()
    assert (body["count"], body["next"], body["previous"]) == (4, None, None)
    assert [item["id"] for item in body["results"]] == [d.pk for d in reversed(log)]
    first = log[0]
    assert first.event_created is not None
    assert body["results"][-1] == {
        "id": first.pk,
        "eshop_id": first.eshop_id,
        "event": "order:update",
        "event_instance": "2024000001",
        "event_created": first.event_created.isoformat().replace("+00:00", "Z"),
        "received_at": first.received_at.isoformat().replace("+00:00", "Z"),
        "signature_valid": True,
        "status": "processed",
        "attempts": 1,
        "error": "",
        "body_length": len(bytes(first.body)),
        "body_sha256": hashlib.sha256(bytes(first.body)).hexdigest(),
        "body_truncated": False,
    }


def test_filters_keep_to_one_eshop_event_and_status(
    staff_client: Client, log: list[WebhookDelivery], onboarded: Installation, other_onboarded: Installation
) -> None:
    def ids(query: str) -> list[int]:
        response = staff_client.get(URL + query)
        assert response.status_code == 200
        return sorted(item["id"] for item in response.json()["results"])

    assert ids(f"?eshop_id={onboarded.eshop_id}") == [log[0].pk, log[1].pk, log[2].pk]
    assert ids(f"?eshop_id={other_onboarded.eshop_id}") == [log[3].pk]
    assert ids(f"?eshop_id={onboarded.eshop_id}&event=order:update") == [log[0].pk, log[2].pk]
    assert ids(f"?eshop_id={onboarded.eshop_id}&status=rejected") == [log[2].pk]
    assert ids("?status=processed&event=invoice:create") == [log[1].pk]
    assert ids("?event=order:teleport") == []


def test_paging(staff_client: Client, log: list[WebhookDelivery]) -> None:
    body = staff_client.get(URL + "?page_size=3&page=2").json()

    assert (body["count"], len(body["results"]), body["next"]) == (4, 1, None)
    assert body["previous"] is not None


@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        ("?status=done", 400, "invalid"),
        ("?eshop_id=abc", 400, "invalid"),
        ("?eshop_id=-1", 400, "invalid"),
        ("?eshop_id=99999999999999999999999", 400, "invalid"),
        ("?event=" + "x" * 65, 400, "invalid"),
        ("?eshop_id=1", 404, "not_found"),
        ("?page=99", 404, "not_found"),
        ("?page_size=0", 200, None),
    ],
)
def test_bad_input(
    staff_client: Client, log: list[WebhookDelivery], query: str, status: int, error: str | None
) -> None:
    response = staff_client.get(URL + query)

    assert response.status_code == status
    if error:
        assert response.json()["error"] == error
        assert response.json()["message"]


def test_a_token_is_required(client: Client, django_user_model, log: list[WebhookDelivery]) -> None:  # type: ignore[no-untyped-def]
    assert client.get(URL).status_code == 401
    assert client.get(URL, headers={"Authorization": "Token wrong"}).status_code == 401
    user = django_user_model.objects.create_user("merchant", password="unused-password-2")
    token = Token.objects.create(user=user)
    assert client.get(URL, headers={"Authorization": f"Token {token.key}"}).status_code == 403


def test_read_only(staff_client: Client, log: list[WebhookDelivery]) -> None:
    assert staff_client.post(URL, {}).status_code == 405
    assert staff_client.delete(URL).status_code == 405
    assert WebhookDelivery.objects.count() == 4
