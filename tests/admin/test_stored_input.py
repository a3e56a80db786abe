"""Staff pages render whatever outsiders managed to store: a body nested thousands deep, lone surrogates,
bytes that are no UTF-8. Each such row is shown escaped, never a 500."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from installations.models import Installation
from sync.models import TOO_DEEP, Invoice, Order
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db

DEEP = b"[" * 5000 + b"]" * 5000
BODIES = {
    "deep": (DEEP, "[" * 5000),
    "deep-object": (b'{"a": ' * 5000 + b"1" + b"}" * 5000, "{&quot;a&quot;: {&quot;a&quot;: "),
    "lone-surrogate": (b'{"event": "order:update", "eventInstance": "\\ud800"}', "\\ud800"),
    "encoded-surrogate": (b'{"event": "order:update", "eventInstance": "\xed\xa0\x80"}', "\\xed\\xa0\\x80"),
    "not-utf8": (b"\xff\xfe<script>", "\\xff\\xfe&lt;script&gt;"),
}


def plant_delivery(installation: Installation, body: bytes) -> WebhookDelivery:
    return WebhookDelivery.objects.create(
        installation=installation,
        eshop_id=installation.eshop_id,
        event="order:update",
        event_instance="planted",
        body=body,
        headers={"Content-Type": "application/json"},
        signature_valid=True,
        status=WebhookDelivery.Status.FAILED,
        attempts=1,
        error="planted",
    )


@pytest.mark.parametrize("kind", BODIES)
def test_a_hostile_delivery_body_is_shown_escaped_everywhere(
    admin_client: Client, tenants: tuple[Installation, Installation], kind: str
) -> None:
    body, shown = BODIES[kind]
    delivery = plant_delivery(tenants[0], body)

    detail = admin_client.get(reverse("admin:webhooks_webhookdelivery_change", args=[delivery.pk]))
    listing = admin_client.get(reverse("admin:webhooks_webhookdelivery_changelist"))
    dashboard = admin_client.get(reverse("admin:index"))
    replay = admin_client.post(reverse("admin:webhooks_webhookdelivery_replay", args=[delivery.pk]))

    assert detail.status_code == 200
    assert shown in detail.content.decode()
    assert "<script>" not in detail.content.decode()
    assert (listing.status_code, dashboard.status_code, replay.status_code) == (200, 200, 302)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.body) == (WebhookDelivery.Status.RECEIVED, body)


def plant_document_data(model: type[Order] | type[Invoice], installation: Installation, data: str) -> Order | Invoice:
    """Store `data` as the document's object straight in the column, as a result file's line is copied there."""
    document = model.objects.filter(installation=installation).order_by("pk").first()
    assert document is not None
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {model._meta.db_table} SET data = %s::jsonb WHERE id = %s", [data, document.pk])  # noqa: S608
    return document


@pytest.mark.parametrize("depth", [150, 1000, 5000])
@pytest.mark.parametrize("model", [Order, Invoice], ids=["orders", "invoices"])
def test_a_document_nested_too_deeply_is_shown_as_unreadable(
    admin_client: Client,
    staff_client: Client,
    tenants: tuple[Installation, Installation],
    model: type[Order] | type[Invoice],
    depth: int,
) -> None:
    mine = tenants[0]
    document = plant_document_data(model, mine, '{"code": "x", "n": ' + "[" * depth + "]" * depth + "}")
    name = model._meta.model_name
    resource = f"{name}s"
    api = f"/api/v1/installations/{mine.eshop_id}/{resource}/"

    listing = admin_client.get(reverse(f"admin:sync_{name}_changelist"))
    detail = admin_client.get(reverse(f"admin:sync_{name}_change", args=[document.pk]))
    api_list = staff_client.get(api)
    api_detail = staff_client.get(f"{api}{quote(document.code, safe='')}/")

    assert (listing.status_code, detail.status_code, api_list.status_code) == (200, 200, 200)
    assert "nested deeper than 100 levels" in detail.content.decode()
    assert api_detail.json()["data"] == TOO_DEEP
    assert {row["code"]: row["data"] for row in api_list.json()["results"]}[document.code] == TOO_DEEP
    # Reading changed nothing: the row holds what was stored.
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT data::text FROM {model._meta.db_table} WHERE id = %s", [document.pk])  # noqa: S608
        assert cursor.fetchone()[0].count("[") == depth
