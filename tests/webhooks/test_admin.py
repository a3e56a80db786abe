"""The delivery log in the admin: filters, search by instance, pretty body, replay; installations show drift."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from installations.models import Installation
from tests.webhooks.conftest import Recorder, body_for, post, post_signed, process_all
from webhooks import registrations
from webhooks.models import RegistrationDrift, WebhookDelivery

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/webhooks/webhookdelivery/"


@pytest.fixture
def log(client: Client, onboarded: Installation, other_onboarded: Installation) -> list[WebhookDelivery]:
    post_signed(client, onboarded, "order:update", "2024000001")
    post_signed(client, onboarded, "order:update", "<script>alert(1)</script>")
    post(client, body_for(onboarded.eshop_id, "order:update", "forged"), "0" * 40)
    post_signed(client, other_onboarded, "order:update", "2024000001")
    process_all()
    return list(WebhookDelivery.objects.order_by("pk"))


def test_the_changelist_with_every_filter(admin_client: Client, log: list[WebhookDelivery]) -> None:
    response = admin_client.get(
        CHANGELIST,
        {
            "eshop": str(log[0].eshop_id),
            "event": "order:update",
            "status__exact": "processed",
            "signature_valid__exact": "1",
            "received_at__gte": "2000-01-01 00:00:00+00:00",
        },
    )

    assert response.status_code == 200
    assert [d.pk for d in response.context["cl"].result_list] == [log[1].pk, log[0].pk]


def test_search_by_instance_is_exact(admin_client: Client, log: list[WebhookDelivery]) -> None:
    response = admin_client.get(CHANGELIST, {"q": "2024000001"})

    assert sorted(d.pk for d in response.context["cl"].result_list) == [log[0].pk, log[3].pk]
    assert list(admin_client.get(CHANGELIST, {"q": "20240000"}).context["cl"].result_list) == []


def test_the_detail_shows_the_pretty_body_escaped(admin_client: Client, log: list[WebhookDelivery]) -> None:
    delivery = log[1]

    response = admin_client.get(reverse("admin:webhooks_webhookdelivery_change", args=[delivery.pk]))

    html = response.content.decode()
    assert response.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)</script>" not in html
    assert "&quot;event&quot;: &quot;order:update&quot;" in html
    assert 'name="_save"' not in html
    assert reverse("admin:webhooks_webhookdelivery_replay", args=[delivery.pk]) in html


def test_replay_from_the_detail_page(admin_client: Client, log: list[WebhookDelivery], record) -> None:
    recorder: Recorder = record("order:update")
    url = reverse("admin:webhooks_webhookdelivery_replay", args=[log[0].pk])

    assert admin_client.get(url).status_code == 405
    response = admin_client.post(url)

    assert response.status_code == 302
    assert WebhookDelivery.objects.get(pk=log[0].pk).status == "received"
    process_all()
    assert [event.delivery_ids for event in recorder.calls] == [(log[0].pk,)]


def test_a_rejected_delivery_cannot_be_replayed(admin_client: Client, log: list[WebhookDelivery]) -> None:
    url = reverse("admin:webhooks_webhookdelivery_replay", args=[log[2].pk])

    admin_client.post(url)

    assert WebhookDelivery.objects.get(pk=log[2].pk).status == "rejected"
    page = admin_client.get(reverse("admin:webhooks_webhookdelivery_change", args=[log[2].pk])).content.decode()
    assert url not in page


def test_bulk_replay(admin_client: Client, log: list[WebhookDelivery]) -> None:
    response = admin_client.post(CHANGELIST, {"action": "replay", "_selected_action": [d.pk for d in log]}, follow=True)

    assert response.status_code == 200
    assert [d.status for d in WebhookDelivery.objects.order_by("pk")] == [
        "received",
        "received",
        "rejected",
        "received",
    ]
    assert "3 deliveries queued for processing again. 1 skipped" in response.content.decode()


def test_staff_without_rights_cannot_replay(client: Client, django_user_model, log: list[WebhookDelivery]) -> None:  # type: ignore[no-untyped-def]
    user = django_user_model.objects.create_user("viewer", password="unused-password-3", is_staff=True)
    client.force_login(user)

    response = client.post(reverse("admin:webhooks_webhookdelivery_replay", args=[log[0].pk]))

    assert response.status_code == 403
    assert WebhookDelivery.objects.get(pk=log[0].pk).status == "processed"


def test_the_installation_page_shows_registrations_and_drift(
    admin_client: Client, onboarded: Installation, fake_shoptet
) -> None:
    shop = fake_shoptet.eshops[onboarded.eshop_id]
    del shop.webhooks[next(i for i, h in shop.webhooks.items() if h["event"] == "order:create")]
    registrations.reconcile_webhooks(installation=onboarded)
    assert RegistrationDrift.objects.count() == 1

    html = admin_client.get(reverse("admin:installations_installation_change", args=[onboarded.pk])).content.decode()

    assert "webhook registration drift" in html.lower()
    assert "order:create" in html
    assert registrations.webhook_url() in html


def test_renewing_the_signature_key_keeps_the_old_one_accepted(
    admin_client: Client, onboarded: Installation, other_onboarded: Installation
) -> None:
    old_key = onboarded.webhook_signature_key

    response = admin_client.post(
        "/admin/installations/installation/",
        {"action": "renew_signature_key", "_selected_action": [onboarded.pk]},
        follow=True,
    )

    assert response.status_code == 200
    renewing = Installation.objects.get(pk=onboarded.pk)
    assert (renewing.webhook_signature_key, renewing.previous_webhook_signature_key) == ("", old_key)
    assert (renewing.onboarding_status, renewing.signature_key_renewed_at) == ("pending", None)
    other = Installation.objects.get(pk=other_onboarded.pk)
    assert (other.webhook_signature_key, other.onboarding_status) == (other_onboarded.webhook_signature_key, "done")
