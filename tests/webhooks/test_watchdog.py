"""Keeping registrations right, recovering what Shoptet could not deliver, and purging old payloads."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from installations.models import Installation
from tests.fakes.shoptet import FakeShoptet
from tests.webhooks.conftest import deliveries, onboard, post_signed, process_all
from webhooks import recovery, registrations
from webhooks.models import RegistrationDrift, WebhookDelivery, WebhookRegistration

pytestmark = pytest.mark.django_db

WANTED = [
    "eshop:projectDomain",
    "invoice:create",
    "invoice:delete",
    "invoice:update",
    "job:finished",
    "order:create",
    "order:delete",
    "order:update",
]


def at_shoptet(fake: FakeShoptet, eshop_id: int) -> dict[str, str]:
    return {hook["event"]: hook["url"] for hook in fake.eshops[eshop_id].webhooks.values()}


def hook_id(fake: FakeShoptet, eshop_id: int, event: str) -> int:
    return next(i for i, hook in fake.eshops[eshop_id].webhooks.items() if hook["event"] == event)


def test_the_watchdog_repairs_drift_and_records_it(
    onboarded: Installation, other_onboarded: Installation, fake_shoptet: FakeShoptet
) -> None:
    ours = registrations.webhook_url()
    shop = fake_shoptet.eshops[onboarded.eshop_id]
    del shop.webhooks[hook_id(fake_shoptet, onboarded.eshop_id, "order:create")]
    shop.webhooks[hook_id(fake_shoptet, onboarded.eshop_id, "invoice:update")]["url"] = "https://old.example.com/hook"
    stray = fake_shoptet.register_webhook(onboarded.eshop_id, "product:update", ours)
    foreign = fake_shoptet.register_webhook(onboarded.eshop_id, "customer:create", "https://erp.example.com/hook")
    other_before = fake_shoptet.stats(other_onboarded.eshop_id)["requests"]

    drift = registrations.reconcile_webhooks(installation=onboarded)

    assert drift is not None
    assert (drift.missing, drift.wrong_url, drift.repaired, drift.error) == (
        ["order:create"],
        ["invoice:update"],
        True,
        "",
    )
    assert drift.strays == [{"id": stray["id"], "event": "product:update", "url": ours}]
    assert at_shoptet(fake_shoptet, onboarded.eshop_id) == {
        **dict.fromkeys(WANTED, ours),
        "customer:create": foreign["url"],
    }
    assert sorted(WebhookRegistration.objects.filter(installation=onboarded).values_list("event", flat=True)) == WANTED
    assert list(RegistrationDrift.objects.values_list("installation_id", flat=True)) == [onboarded.pk]
    assert fake_shoptet.stats(other_onboarded.eshop_id)["requests"] == other_before


def test_no_drift_no_record_no_writes(onboarded: Installation, fake_shoptet: FakeShoptet) -> None:
    writes = fake_shoptet.request_count(None, r"/api/webhooks", methods_other_than_get=True)

    assert registrations.reconcile_webhooks(installation=onboarded) is None

    assert fake_shoptet.request_count(None, r"/api/webhooks", methods_other_than_get=True) == writes
    assert not RegistrationDrift.objects.exists()


def test_a_failed_repair_is_recorded(onboarded: Installation, fake_shoptet: FakeShoptet) -> None:
    from shoptet_api.errors import Forbidden

    del fake_shoptet.eshops[onboarded.eshop_id].webhooks[hook_id(fake_shoptet, onboarded.eshop_id, "order:create")]
    fake_shoptet.add_fault("POST", r"/api/webhooks$", 403, error_code="invalid-token-no-rights", message="No rights")

    with pytest.raises(Forbidden):
        registrations.reconcile_webhooks(installation=onboarded)

    drift = RegistrationDrift.objects.get()
    assert (drift.missing, drift.repaired) == (["order:create"], False)
    assert drift.error.startswith("Forbidden: HTTP 403 invalid-token-no-rights No rights (request ")


def test_inactive_and_unonboarded_installations_are_not_watched(
    onboarded: Installation, other_installation: Installation, fake_shoptet: FakeShoptet
) -> None:
    assert registrations.installations_to_watch() == [onboarded.pk]
    onboarded.transition_to(Installation.Status.SUSPENDED, cause="test")
    requests = fake_shoptet.request_count(None, ".*")

    assert registrations.installations_to_watch() == []
    assert registrations.reconcile_webhooks(installation=onboarded) is None
    assert recovery.recover_notifications(installation=onboarded) == []
    assert fake_shoptet.request_count(None, ".*") == requests


def test_notifications_that_never_reached_us_are_recovered_once(
    client: Client,
    installation: Installation,
    other_installation: Installation,
    fake_shoptet: FakeShoptet,
    settings,
    record,
) -> None:
    recorder = record("order:*")
    settings.PUBLIC_URL = "http://127.0.0.1:9"  # the platform is unreachable for Shoptet
    shop = onboard(installation)
    other = onboard(other_installation)
    code = fake_shoptet.create_order(shop.eshop_id)  # Shoptet's delivery fails: nobody listens
    fake_shoptet.create_order(other.eshop_id)
    delivered = next(iter(fake_shoptet.eshops[shop.eshop_id].orders))
    fake_shoptet.update_order(shop.eshop_id, delivered, email="x@example.com")
    # ...but this one did reach us another way (a retry that got through): no recovery for it.
    [notification] = [n for n in fake_shoptet.eshops[shop.eshop_id].notifications if n.event == "order:update"]
    post_signed(client, shop, "order:update", delivered, created=notification.event_created)
    assert [n.status for n in fake_shoptet.eshops[shop.eshop_id].notifications] == ["failed", "failed"]

    recovered = recovery.recover_notifications(installation=shop)

    [delivery] = WebhookDelivery.objects.filter(pk__in=recovered)
    assert (delivery.event, delivery.event_instance, delivery.status) == ("order:create", code, "received")
    assert (delivery.source, delivery.signature_valid, delivery.installation_id) == ("notification-log", None, shop.pk)
    assert recovery.recover_notifications(installation=shop) == []
    assert not WebhookDelivery.objects.filter(installation=other).exists()
    process_all()
    assert sorted((event.event, event.instance) for event in recorder.calls) == [
        ("order:create", code),
        ("order:update", delivered),
    ]


def test_payloads_of_settled_deliveries_are_purged_metadata_stays(
    client: Client, onboarded: Installation, other_onboarded: Installation
) -> None:
    post_signed(client, onboarded, "order:update", "A")
    post_signed(client, onboarded, "order:update", "B")
    post_signed(client, other_onboarded, "order:update", "C")
    process_all()
    post_signed(client, onboarded, "order:update", "D")  # still received
    old = timezone.now() - timedelta(days=31)
    WebhookDelivery.objects.exclude(event_instance="B").update(received_at=old)

    assert recovery.purge_payloads(older_than=timedelta(days=30)) == 2

    state = {d.event_instance: (bytes(d.body) == b"", d.payload_purged_at is not None) for d in deliveries()}
    assert state == {"A": (True, True), "B": (False, False), "C": (True, True), "D": (False, False)}
    purged = WebhookDelivery.objects.get(event_instance="A")
    assert (purged.event, purged.status, purged.attempts) == ("order:update", "processed", 1)
    assert purged.headers["Shoptet-Webhook-Signature"]
    assert recovery.purge_payloads(older_than=timedelta(days=30)) == 0


def test_the_tasks_call_their_services(
    client: Client, onboarded: Installation, fake_shoptet: FakeShoptet, record
) -> None:
    from webhooks import tasks

    recorder = record("order:update")
    post_signed(client, onboarded, "order:update", "A")
    del fake_shoptet.eshops[onboarded.eshop_id].webhooks[hook_id(fake_shoptet, onboarded.eshop_id, "order:create")]

    tasks.process_delivery.apply(args=(deliveries()[0].pk,), throw=True)
    tasks.reconcile_webhooks.apply(args=(onboarded.pk,), throw=True)
    tasks.recover_notifications.apply(args=(onboarded.pk,), throw=True)
    tasks.purge_payloads.apply(throw=True)

    assert [event.instance for event in recorder.calls] == ["A"]
    assert RegistrationDrift.objects.get().missing == ["order:create"]
    assert "order:create" in at_shoptet(fake_shoptet, onboarded.eshop_id)
