"""addon:* events drive the tenant's life cycle; unsigned ones count only when getAccessToken confirms them."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from installations.models import Installation, StatusChange
from shoptet_api import tokens
from shoptet_api.client import ShoptetClient
from shoptet_api.errors import InstallationInactive
from tests.conftest import install_via_fake
from tests.fakes.shoptet import FakeShoptet
from tests.webhooks.conftest import (
    PRAGUE,
    Recorder,
    body_for,
    deliveries,
    onboard,
    post,
    post_signed,
    process_all,
)
from webhooks import outbox, processing, signature
from webhooks.models import WebhookDelivery, WebhookRegistration

GET_ACCESS_TOKEN = r"/getAccessToken"


def history(installation: Installation) -> list[tuple[str, str, str]]:
    return list(
        StatusChange.objects.filter(installation=installation)
        .order_by("id")
        .values_list("from_status", "to_status", "cause")
    )


def installed_long_ago(installation: Installation) -> None:
    Installation.objects.filter(pk=installation.pk).update(lifecycle_event_at=timezone.now() - timedelta(hours=1))


# ---------------------------------------------------------------------------
# Signed events, delivered by the fake Shoptet to the running platform
# ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_suspend_holds_everything_and_approve_catches_up(
    live_platform: str, installation: Installation, other_installation: Installation, fake_shoptet: FakeShoptet, record
) -> None:
    recorder: Recorder = record("order:update")
    catch_up: Recorder = record("addon:approve")
    shop = onboard(installation)
    other = onboard(other_installation)

    assert fake_shoptet.suspend(shop.eshop_id) == 200
    process_all()

    shop.refresh_from_db()
    assert shop.status == "suspended"
    assert history(shop)[-1] == ("active", "suspended", "addon:suspend webhook")
    with pytest.raises(InstallationInactive):
        ShoptetClient(shop).get_eshop()
    code = next(iter(fake_shoptet.eshops[shop.eshop_id].orders))
    assert post_signed(Client(), shop, "order:update", code).status_code == 200
    process_all()
    assert recorder.calls == []
    assert WebhookDelivery.objects.filter(installation=shop, event="order:update").get().status == "received"

    assert fake_shoptet.approve(shop.eshop_id) == 200
    process_all()

    shop.refresh_from_db()
    assert shop.status == "active"
    assert history(shop)[-1] == ("suspended", "active", "addon:approve webhook")
    assert [event.instance for event in recorder.calls] == [code]
    assert [event.installation.status for event in catch_up.calls] == ["active"]
    assert {d.event: d.status for d in deliveries(shop)} == {
        "addon:suspend": "processed",
        "addon:approve": "processed",
        "order:update": "processed",
    }
    assert Installation.objects.get(pk=other.pk).status == "active"
    assert history(other) == [("", "active", "install callback")]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("end", "status"), [("uninstall", "uninstalled"), ("terminate", "terminated")])
def test_uninstall_and_terminate_end_the_tenant(
    live_platform: str,
    installation: Installation,
    other_installation: Installation,
    fake_shoptet: FakeShoptet,
    record,
    end: str,
    status: str,
) -> None:
    recorder: Recorder = record("order:*")
    shop = onboard(installation)
    other = onboard(other_installation)
    assert tokens.cached_token(shop) is not None

    assert getattr(fake_shoptet, end)(shop.eshop_id) == 200
    process_all()

    shop.refresh_from_db()
    assert shop.status == status
    assert history(shop)[-1] == ("active", status, f"addon:{end} webhook")
    assert tokens.cached_token(shop) is None
    assert not WebhookRegistration.objects.filter(installation=shop).exists()
    requests_before = fake_shoptet.request_count(None, ".*")
    assert post_signed(Client(), shop, "order:create", "2024000099").status_code == 200
    process_all()
    later = WebhookDelivery.objects.get(installation=shop, event="order:create")
    assert (later.status, later.error) == ("ignored", f"The e-shop is {status}: stored, not processed.")
    assert recorder.calls == []
    assert fake_shoptet.request_count(None, ".*") == requests_before
    assert Installation.objects.get(pk=other.pk).status == "active"
    assert WebhookRegistration.objects.filter(installation=other).count() == 8
    assert tokens.cached_token(other) is not None


# ---------------------------------------------------------------------------
# Unsigned events: only what getAccessToken confirms
# ---------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("sig", [None, "0" * 40, "other-key"])
def test_a_forged_uninstall_does_not_disable_the_tenant(
    client: Client,
    onboarded: Installation,
    other_onboarded: Installation,
    fake_shoptet: FakeShoptet,
    sig: str | None,
) -> None:
    body = body_for(onboarded.eshop_id, "addon:uninstall", str(onboarded.eshop_id))
    if sig == "other-key":
        sig = signature.sign(body, other_onboarded.webhook_signature_key)

    response = post(client, body, sig)
    assert response.status_code == 200
    probes_before = fake_shoptet.request_count("GET", GET_ACCESS_TOKEN)
    process_all()

    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.signature_valid) == ("rejected", False)
    assert delivery.error == "Unsigned addon:uninstall not confirmed: getAccessToken reports the add-on as active."
    assert fake_shoptet.request_count("GET", GET_ACCESS_TOKEN) == probes_before + 1
    assert Installation.objects.get(pk=onboarded.pk).status == "active"
    assert history(onboarded) == [("", "active", "install callback")]
    assert WebhookRegistration.objects.filter(installation=onboarded).count() == 8


@pytest.mark.django_db
def test_a_flood_of_forged_events_probes_once_per_interval(
    client: Client, onboarded: Installation, fake_shoptet: FakeShoptet
) -> None:
    post(client, body_for(onboarded.eshop_id, "addon:uninstall", str(onboarded.eshop_id)))
    process_all()
    probes = fake_shoptet.request_count("GET", GET_ACCESS_TOKEN)

    post(client, body_for(onboarded.eshop_id, "addon:terminate", str(onboarded.eshop_id)))
    post(client, body_for(onboarded.eshop_id, "addon:suspend", str(onboarded.eshop_id)))
    process_all()

    assert fake_shoptet.request_count("GET", GET_ACCESS_TOKEN) == probes
    held = WebhookDelivery.objects.filter(status="received").order_by("pk")
    assert [d.event for d in held] == ["addon:terminate", "addon:suspend"]
    for delivery in held:
        assert delivery.next_attempt_at is not None
        assert delivery.next_attempt_at > delivery.received_at + processing.ADDON_PROBE_INTERVAL - timedelta(seconds=5)
    assert Installation.objects.get(pk=onboarded.pk).status == "active"


@pytest.mark.django_db
@pytest.mark.parametrize("keep_token", [True, False])
def test_an_unsigned_uninstall_that_getaccesstoken_confirms_is_applied(
    client: Client, onboarded: Installation, other_onboarded: Installation, fake_shoptet: FakeShoptet, keep_token: bool
) -> None:
    # Shoptet might not sign system events: the probe answers addon_not_installed, or invalid_token.
    fake_shoptet.uninstall(onboarded.eshop_id, send_system_webhook=False, keep_token_valid_for_probe=keep_token)
    tokens.forget_access_tokens(onboarded)

    assert post(client, body_for(onboarded.eshop_id, "addon:uninstall", str(onboarded.eshop_id))).status_code == 200
    process_all()

    shop = Installation.objects.get(pk=onboarded.pk)
    assert shop.status == "uninstalled"
    assert history(shop)[-1][1] == "uninstalled"
    assert WebhookDelivery.objects.get().status == "processed"
    assert not WebhookRegistration.objects.filter(installation=shop).exists()
    assert Installation.objects.get(pk=other_onboarded.pk).status == "active"


@pytest.mark.django_db
def test_an_unsigned_approve_is_applied_when_the_addon_is_active_again(
    client: Client, onboarded: Installation, fake_shoptet: FakeShoptet
) -> None:
    fake_shoptet.suspend(onboarded.eshop_id, send_system_webhook=False)
    onboarded.transition_to(Installation.Status.SUSPENDED, cause="test")
    fake_shoptet.approve(onboarded.eshop_id, send_system_webhook=False)

    post(client, body_for(onboarded.eshop_id, "addon:approve", onboarded.eshop_id))
    process_all()

    assert Installation.objects.get(pk=onboarded.pk).status == "active"
    assert history(onboarded)[-1] == ("suspended", "active", "addon:approve webhook")


@pytest.mark.django_db
def test_an_unsigned_suspend_of_an_active_addon_is_rejected(
    client: Client, onboarded: Installation, fake_shoptet: FakeShoptet
) -> None:
    post(client, body_for(onboarded.eshop_id, "addon:suspend", onboarded.eshop_id))
    process_all()

    assert WebhookDelivery.objects.get().status == "rejected"
    assert Installation.objects.get(pk=onboarded.pk).status == "active"


# ---------------------------------------------------------------------------
# Order of events, reinstall
# ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_event_older_than_the_last_change_changes_nothing(client: Client, onboarded: Installation, record) -> None:
    catch_up: Recorder = record("addon:approve")
    now = datetime.now(PRAGUE).replace(microsecond=0)
    post_signed(client, onboarded, "addon:suspend", onboarded.eshop_id, created=now)
    process_all()
    post_signed(client, onboarded, "addon:approve", onboarded.eshop_id, created=now - timedelta(minutes=1))
    process_all()

    assert Installation.objects.get(pk=onboarded.pk).status == "suspended"
    assert [d.status for d in deliveries()] == ["processed", "processed"]
    assert history(onboarded)[-1] == ("active", "suspended", "addon:suspend webhook")
    assert catch_up.calls == []  # an addon's reaction to approve runs only when the approve applied


@pytest.mark.django_db
def test_reinstall_brings_it_back_and_the_old_uninstall_stays_old(
    client: Client, onboarded: Installation, fake_shoptet: FakeShoptet
) -> None:
    installed_long_ago(onboarded)
    post_signed(client, onboarded, "addon:uninstall", onboarded.eshop_id, ago=timedelta(minutes=5))
    process_all()
    assert Installation.objects.get(pk=onboarded.pk).status == "uninstalled"

    reinstalled = onboard(install_via_fake(fake_shoptet, onboarded.eshop_id))
    assert reinstalled.status == "active"
    outbox.replay_deliveries(deliveries=WebhookDelivery.objects.filter(event="addon:uninstall"))
    process_all()

    assert Installation.objects.get(pk=onboarded.pk).status == "active"
    assert [(f, t) for f, t, _ in history(onboarded)] == [
        ("", "active"),
        ("active", "uninstalled"),
        ("uninstalled", "active"),
    ]


@pytest.mark.django_db
def test_approve_does_not_revive_an_uninstalled_eshop(client: Client, onboarded: Installation) -> None:
    installed_long_ago(onboarded)
    post_signed(client, onboarded, "addon:uninstall", onboarded.eshop_id, ago=timedelta(seconds=5))
    process_all()

    post_signed(client, onboarded, "addon:approve", onboarded.eshop_id)
    process_all()

    assert Installation.objects.get(pk=onboarded.pk).status == "uninstalled"


@pytest.mark.django_db
def test_approve_resumes_a_pending_onboarding(client: Client, installation: Installation) -> None:
    from installations import services as installation_services

    installation.webhook_signature_key = "key"
    installation.onboarding_enqueued_at = installation.installed_at
    installation.save()
    installation.transition_to(Installation.Status.SUSPENDED, cause="test")

    post_signed(client, installation, "addon:approve", installation.eshop_id)
    process_all()

    shop = Installation.objects.get(pk=installation.pk)
    assert (shop.status, shop.onboarding_status, shop.onboarding_enqueued_at) == ("active", "pending", None)
    assert installation_services.claim_pending_onboarding(stale_after=timedelta(hours=1)) == [shop.pk]


@pytest.mark.django_db
def test_a_new_project_domain_refreshes_the_eshops_identity(
    client: Client, onboarded: Installation, other_onboarded: Installation, fake_shoptet: FakeShoptet
) -> None:
    shop = fake_shoptet.eshops[onboarded.eshop_id]
    with fake_shoptet.state.lock:
        shop.url = "https://www.nova-domena.cz/"
        shop.name = "Nová doména"
    other_before = Installation.objects.get(pk=other_onboarded.pk)

    post_signed(client, onboarded, "eshop:projectDomain", onboarded.eshop_id)
    process_all()

    refreshed = Installation.objects.get(pk=onboarded.pk)
    assert (refreshed.eshop_url, refreshed.name) == ("https://www.nova-domena.cz/", "Nová doména")
    assert WebhookDelivery.objects.get().status == "processed"
    other = Installation.objects.get(pk=other_onboarded.pk)
    assert (other.eshop_url, other.name) == (other_before.eshop_url, other_before.name)
