"""E-shop ids from outside (webhook bodies, REST filters and paths): ASCII digits only, never a 500."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from django.test import Client

from installations.models import Installation
from tests.conftest import NOT_ESHOP_IDS, install_via_fake
from tests.fakes.shoptet import FakeShoptet
from tests.webhooks.conftest import onboard, post, shoptet_time
from webhooks import signature
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db

ESHOP_ID = 1000001
# The same as JSON values other than strings: `true` is an int to Python, 10**18 has 19 digits.
NOT_ESHOP_ID_LITERALS = ["true", "false", "1e3", "1000001.0", "-1", "0", str(10**18), "null", "[1000001]"]


@pytest.fixture
def eshop(fake_shoptet: FakeShoptet) -> Installation:
    return onboard(install_via_fake(fake_shoptet, ESHOP_ID))


def signed_body(eshop: Installation, eshop_id_literal: str) -> tuple[bytes, str]:
    rest = {"event": "order:update", "eventCreated": shoptet_time(), "eventInstance": "X1"}
    body = ('{"eshopId":' + eshop_id_literal + "," + json.dumps(rest)[1:]).encode()
    return body, signature.sign(body, eshop.webhook_signature_key)


@pytest.mark.parametrize(
    "literal", [json.dumps(value, ensure_ascii=False) for value in NOT_ESHOP_IDS] + NOT_ESHOP_ID_LITERALS
)
def test_a_webhook_body_with_what_is_not_an_eshop_id_is_400(client: Client, eshop: Installation, literal: str) -> None:
    response = post(client, *signed_body(eshop, literal))

    assert response.status_code == 400, response.content.decode()
    assert not WebhookDelivery.objects.filter(installation=eshop).exists()
    assert WebhookDelivery.objects.get().error == "eshopId is not an e-shop id."


def test_a_webhook_body_with_the_eshop_id_as_a_string_or_a_number_is_accepted(
    client: Client, eshop: Installation
) -> None:
    for literal in (f'"{ESHOP_ID}"', str(ESHOP_ID)):
        assert post(client, *signed_body(eshop, literal)).status_code == 200
    assert WebhookDelivery.objects.filter(installation=eshop).count() == 2


def test_the_delivery_filter_refuses_what_is_not_an_eshop_id(staff_client: Client, eshop: Installation) -> None:
    for value in NOT_ESHOP_IDS:
        response = staff_client.get("/api/v1/webhook-deliveries/", {"eshop_id": value})
        assert response.status_code == 400, value
        assert response.json()["error"] == "invalid"


def test_installation_paths_refuse_what_is_not_an_eshop_id(staff_client: Client, eshop: Installation) -> None:
    for value in NOT_ESHOP_IDS:
        base = f"/api/v1/installations/{quote(value)}/"
        for path in ["", "orders/", "invoices/", "jobs/", "orders/X1/"]:
            response = staff_client.get(base + path)
            assert response.status_code == 404, (value, path, response.content.decode())
        sync = {"resource": "orders", "mode": "changes"}
        response = staff_client.post(base + "sync/", sync, content_type="application/json")
        assert response.status_code == 404, (value, response.content.decode())
