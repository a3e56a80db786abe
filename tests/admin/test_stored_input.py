"""Staff pages render whatever outsiders managed to store: a body nested thousands deep, lone surrogates,
bytes that are no UTF-8. Each such row is shown escaped, never a 500."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from installations.models import Installation
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
