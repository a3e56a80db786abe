"""Processing: one handler call per entity burst, duplicates skipped, replays processed again, failures retried."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from installations.models import Installation
from shoptet_api.client import ShoptetClient
from shoptet_api.errors import ServerError, TransportError
from tests.fakes.shoptet import FakeShoptet
from tests.webhooks.conftest import (
    PRAGUE,
    Recorder,
    body_for,
    deliveries,
    in_thread,
    post,
    post_signed,
    process_all,
)
from webhooks import outbox, processing, signature, webhook_handlers
from webhooks.models import WebhookDelivery
from webhooks.registry import WebhookEvent, handles, registry

pytestmark = pytest.mark.django_db


def test_a_delivery_is_handed_to_its_handler(client: Client, onboarded: Installation, record) -> None:
    recorder: Recorder = record("order:update")
    created = datetime.now(PRAGUE).replace(microsecond=0)
    post_signed(client, onboarded, "order:update", "2024000057", created=created)
    [delivery] = deliveries()

    processing.process_delivery(delivery_id=delivery.pk)

    [event] = recorder.calls
    assert event == WebhookEvent(
        installation=event.installation,
        event="order:update",
        instance="2024000057",
        codes=("2024000057",),
        created=created,
        delivery_ids=(delivery.pk,),
    )
    assert event.installation.pk == onboarded.pk
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.error, delivery.next_attempt_at) == ("processed", 1, "", None)
    assert delivery.processed_at is not None


def test_processing_twice_does_nothing_more(client: Client, onboarded: Installation, record) -> None:
    recorder: Recorder = record("order:update")
    post_signed(client, onboarded, "order:update", "A")
    [delivery] = deliveries()

    processing.process_delivery(delivery_id=delivery.pk)
    processing.process_delivery(delivery_id=delivery.pk)

    assert len(recorder.calls) == 1
    assert WebhookDelivery.objects.get().attempts == 1


def test_a_burst_for_one_entity_is_one_call(client: Client, onboarded: Installation, record) -> None:
    recorder: Recorder = record("order:update")
    now = datetime.now(PRAGUE).replace(microsecond=0)
    for seconds in (30, 10, 20):
        post_signed(client, onboarded, "order:update", "A", created=now - timedelta(seconds=seconds))
    post_signed(client, onboarded, "order:update", "B")

    outcome = process_all()

    assert outcome.handler_calls == 2
    by_instance = {event.instance: event for event in recorder.calls}
    ids = [d.pk for d in deliveries()]
    assert by_instance["A"].delivery_ids == tuple(ids[:3])
    assert by_instance["A"].created == now - timedelta(seconds=10)
    assert by_instance["B"].delivery_ids == (ids[3],)
    assert {d.status for d in deliveries()} == {"processed"}


def test_a_copy_of_a_processed_delivery_is_a_duplicate(client: Client, onboarded: Installation, record) -> None:
    recorder: Recorder = record("order:update")
    body = body_for(onboarded.eshop_id, "order:update", "A")
    sig = signature.sign(body, onboarded.webhook_signature_key)
    post(client, body, sig)
    process_all()

    post(client, body, sig)  # Shoptet sends it again
    process_all()

    first, second = deliveries()
    assert len(recorder.calls) == 1
    assert (second.status, second.duplicate_of_id, second.attempts) == ("processed", first.pk, 0)


def test_copies_arriving_together_are_one_call(client: Client, onboarded: Installation, record) -> None:
    recorder: Recorder = record("order:update")
    body = body_for(onboarded.eshop_id, "order:update", "A")
    for _ in range(5):
        post(client, body, signature.sign(body, onboarded.webhook_signature_key))

    process_all()

    ids = [d.pk for d in deliveries()]
    assert len(recorder.calls) == 1
    assert recorder.calls[0].delivery_ids == tuple(ids)
    assert [(d.status, d.duplicate_of_id, d.attempts) for d in deliveries()] == [("processed", None, 1)] + [
        ("processed", ids[0], 1)
    ] * 4


def test_a_replayed_delivery_is_processed_again(client: Client, onboarded: Installation, record) -> None:
    recorder: Recorder = record("order:update")
    post_signed(client, onboarded, "order:update", "A")
    process_all()

    assert outbox.replay_deliveries(deliveries=WebhookDelivery.objects.all()) == 1
    replayed = WebhookDelivery.objects.get()
    assert (replayed.status, replayed.replay_requested, replayed.attempts) == ("received", True, 0)
    process_all()

    assert len(recorder.calls) == 2
    done = WebhookDelivery.objects.get()
    assert (done.status, done.replay_requested, done.attempts, done.duplicate_of_id) == ("processed", False, 1, None)
    assert done.replayed_at is not None


def test_rejected_and_received_deliveries_are_not_replayed(client: Client, onboarded: Installation) -> None:
    post(client, body_for(onboarded.eshop_id, "order:update", "A"), "0" * 40)
    post_signed(client, onboarded, "order:update", "B")

    assert outbox.replay_deliveries(deliveries=WebhookDelivery.objects.all()) == 0
    assert [d.status for d in deliveries()] == ["rejected", "received"]


def test_mass_events_expand_to_their_codes(client: Client, onboarded: Installation, record) -> None:
    recorder: Recorder = record("order:*")
    post_signed(client, onboarded, "order:massUpdate", '["2024001","2024002",2024003,"2024001"]')

    process_all()

    assert recorder.calls[0].codes == ("2024001", "2024002", "2024003")
    assert recorder.calls[0].event == "order:massUpdate"


def test_a_mass_event_without_a_list_fails(client: Client, onboarded: Installation, record) -> None:
    recorder: Recorder = record("invoice:*")
    post_signed(client, onboarded, "invoice:massUpdate", "not-a-list")

    process_all()

    delivery = WebhookDelivery.objects.get()
    assert recorder.calls == []
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert delivery.error == "ValueError: eventInstance of invoice:massUpdate is not a JSON list of codes"


def test_transient_errors_are_retried_later_then_fail(client: Client, onboarded: Installation, record) -> None:
    def flaky(event: WebhookEvent) -> None:
        raise ServerError("Shoptet is down", http_status=503)

    record("order:update", action=flaky)
    post_signed(client, onboarded, "order:update", "A")
    [delivery] = deliveries()

    outcome = processing.process_delivery(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert outcome.retrying == [delivery.pk]
    assert (delivery.status, delivery.attempts) == ("received", 1)
    assert delivery.error == "ServerError: HTTP 503 Shoptet is down"
    assert delivery.next_attempt_at is not None
    assert timezone.now() + timedelta(seconds=7) < delivery.next_attempt_at < timezone.now() + timedelta(seconds=16)
    assert outbox.claim_due_deliveries() == []  # not due before its time

    for _ in range(processing.MAX_ATTEMPTS - 1):
        processing.process_delivery(delivery_id=delivery.pk)
    failed = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (failed.status, failed.attempts, failed.next_attempt_at) == ("failed", processing.MAX_ATTEMPTS, None)


def test_a_transient_error_then_success(client: Client, onboarded: Installation, record) -> None:
    failures = [TransportError("connection reset")]

    def once(event: WebhookEvent) -> None:
        if failures:
            raise failures.pop()

    recorder: Recorder = record("order:update", action=once)
    post_signed(client, onboarded, "order:update", "A")
    [delivery] = deliveries()
    processing.process_delivery(delivery_id=delivery.pk)

    processing.process_delivery(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.error) == ("processed", 2, "")
    assert len(recorder.calls) == 1


def test_other_errors_fail_the_delivery_with_their_text(client: Client, onboarded: Installation, record) -> None:
    def broken(event: WebhookEvent) -> None:
        raise KeyError("orderCode")

    record("order:update", action=broken)
    post_signed(client, onboarded, "order:update", "A")

    process_all()

    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.error) == ("failed", 1, "KeyError: 'orderCode'")
    assert outbox.claim_due_deliveries() == []


def test_every_handler_of_an_event_runs(client: Client, onboarded: Installation, record) -> None:
    first: Recorder = record("order:*")
    second: Recorder = record("order:update")
    post_signed(client, onboarded, "order:update", "A")

    process_all()

    assert (len(first.calls), len(second.calls)) == (1, 1)


def test_an_event_no_app_handles_is_recorded_until_one_does(
    client: Client, onboarded: Installation, scratch_registry: None
) -> None:
    assert registry.handlers_for("order:update") == []
    assert registry.handlers_for("job:finished") == []
    assert registry.handlers_for("product:update") == []
    post_signed(client, onboarded, "order:update", "A")
    post_signed(client, onboarded, "job:finished", "job-1")
    post_signed(client, onboarded, "invoice:update", "B")

    process_all()

    assert sorted(WebhookDelivery.objects.values_list("event", "status", "error")) == [
        ("invoice:update", "processed", ""),
        ("job:finished", "processed", ""),
        ("order:update", "processed", ""),
    ]

    @handles("order:*")
    def sync_orders(event: WebhookEvent) -> None:
        pass

    assert registry.handlers_for("order:update") == [sync_orders]
    assert registry.handlers_for("invoice:update") == []


def test_life_cycle_handlers_run_before_the_others(scratch_registry: None) -> None:
    @handles("addon:approve")
    def catch_up(event: WebhookEvent) -> None:
        pass

    assert registry.handlers_for("addon:approve") == [webhook_handlers.approve, catch_up]


@pytest.mark.parametrize("pattern", ["order:updated", "orders:*", "order", "*", ""])
def test_handles_refuses_what_is_not_an_event(pattern: str, scratch_registry: None) -> None:
    with pytest.raises(ValueError, match="event"):
        handles(pattern)


def test_an_event_without_handlers_is_processed(client: Client, onboarded: Installation) -> None:
    post_signed(client, onboarded, "product:update", "guid-1")

    process_all()

    assert WebhookDelivery.objects.get().status == "processed"


def test_deliveries_received_before_an_uninstall_are_not_processed(
    client: Client, onboarded: Installation, record
) -> None:
    recorder: Recorder = record("order:update")
    post_signed(client, onboarded, "order:update", "A")
    onboarded.transition_to(Installation.Status.UNINSTALLED, cause="test")

    process_all()

    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.error) == ("ignored", "The e-shop is uninstalled: stored, not processed.")
    assert recorder.calls == []


def test_deliveries_of_a_suspended_eshop_wait_for_approval(client: Client, onboarded: Installation, record) -> None:
    recorder: Recorder = record("order:update")
    post_signed(client, onboarded, "order:update", "A")
    onboarded.transition_to(Installation.Status.SUSPENDED, cause="test")

    assert outbox.claim_due_deliveries() == []
    processing.process_delivery(delivery_id=deliveries()[0].pk)
    assert (recorder.calls, WebhookDelivery.objects.get().status) == ([], "received")


def test_the_same_entity_of_another_eshop_is_processed_apart(
    client: Client, onboarded: Installation, other_onboarded: Installation, record
) -> None:
    recorder: Recorder = record("order:update")
    post_signed(client, onboarded, "order:update", "A")
    post_signed(client, other_onboarded, "order:update", "A")

    process_all()

    assert sorted(event.installation.eshop_id for event in recorder.calls) == sorted(
        [onboarded.eshop_id, other_onboarded.eshop_id]
    )
    assert all(len(event.delivery_ids) == 1 for event in recorder.calls)


@pytest.mark.django_db(transaction=True)
def test_a_busy_entity_is_looked_at_again_shortly(client: Client, onboarded: Installation, record) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(event: WebhookEvent) -> None:
        started.set()
        assert release.wait(10)

    recorder: Recorder = record("order:update", action=slow)
    body = body_for(onboarded.eshop_id, "order:update", "A")
    post(client, body, signature.sign(body, onboarded.webhook_signature_key))
    first = deliveries()[0]
    worker = in_thread(processing.process_delivery, delivery_id=first.pk)
    assert started.wait(10)
    post_signed(client, onboarded, "order:update", "A", ago=timedelta(seconds=-1))
    second = deliveries()[1]

    busy = processing.process_delivery(delivery_id=second.pk)

    release.set()
    worker.join(10)
    second.refresh_from_db()
    assert busy.handler_calls == 0
    assert second.status == "received"
    assert second.next_attempt_at is not None
    assert timezone.now() < second.next_attempt_at <= timezone.now() + processing.BUSY_DELAY
    processing.process_delivery(delivery_id=second.pk)
    assert len(recorder.calls) == 2
    assert [d.status for d in deliveries()] == ["processed", "processed"]


def test_out_of_order_updates_end_in_the_latest_state(
    client: Client, onboarded: Installation, fake_shoptet: FakeShoptet, record
) -> None:
    stored: dict[str, dict] = {}

    def fetch(event: WebhookEvent) -> None:
        for code in event.codes:
            stored[code] = ShoptetClient(event.installation).get_order(code)

    record("order:update", action=fetch)
    code = next(iter(fake_shoptet.eshops[onboarded.eshop_id].orders))
    now = datetime.now(PRAGUE).replace(microsecond=0)
    fake_shoptet.update_order(onboarded.eshop_id, code, webhook=False, email="first@example.com")
    latest = fake_shoptet.update_order(onboarded.eshop_id, code, webhook=False, email="second@example.com")
    # The second update's notification arrives and is processed first; the first one's comes after.
    post_signed(client, onboarded, "order:update", code, created=now)
    process_all()
    post_signed(client, onboarded, "order:update", code, created=now - timedelta(seconds=5))
    process_all()

    assert stored[code]["email"] == "second@example.com" == latest["email"]
    assert [d.status for d in deliveries()] == ["processed", "processed"]


def test_a_handler_registered_in_one_line_runs(client: Client, onboarded: Installation, scratch_registry) -> None:
    seen = []
    handles("invoice:create")(lambda event: seen.append(event.instance))
    post_signed(client, onboarded, "invoice:create", "FA-1")

    process_all()

    assert seen == ["FA-1"]


@pytest.mark.django_db(transaction=True)
def test_a_batch_leaves_only_its_busy_entities_for_later(
    client: Client, onboarded: Installation, other_onboarded: Installation, record
) -> None:
    started, release = threading.Event(), threading.Event()

    def slow_for_a(event: WebhookEvent) -> None:
        if event.instance == "A" and event.installation.pk == onboarded.pk and not started.is_set():
            started.set()
            assert release.wait(10)

    recorder: Recorder = record("order:update", action=slow_for_a)
    post_signed(client, onboarded, "order:update", "A")
    (first,) = outbox.claim_installation_batches(installation_id=onboarded.pk)
    worker = in_thread(processing.process_batch, batch=first)
    assert started.wait(10)
    post_signed(client, onboarded, "order:update", "A", ago=timedelta(seconds=-1))
    post_signed(client, onboarded, "order:update", "B")
    post_signed(client, other_onboarded, "order:update", "A")
    (second,) = outbox.claim_installation_batches(installation_id=onboarded.pk)
    (other,) = outbox.claim_installation_batches(installation_id=other_onboarded.pk)

    processing.process_batch(batch=second)
    processing.process_batch(batch=other)

    later = (
        WebhookDelivery.objects.filter(installation=onboarded, event="order:update")
        .with_instance("A")
        .exclude(pk__in=first.delivery_ids)
        .get()
    )
    assert later.status == "received"
    assert later.next_attempt_at is not None
    assert timezone.now() < later.next_attempt_at <= timezone.now() + processing.BUSY_DELAY
    assert WebhookDelivery.objects.filter(installation=onboarded).with_instance("B").get().status == "processed"
    assert WebhookDelivery.objects.get(installation=other_onboarded).status == "processed"
    release.set()
    worker.join(10)
    WebhookDelivery.objects.filter(pk=later.pk).update(next_attempt_at=timezone.now())
    (third,) = outbox.claim_installation_batches(installation_id=onboarded.pk)
    processing.process_batch(batch=third)
    assert not WebhookDelivery.objects.exclude(status="processed").exists()
    assert sorted((event.installation.pk, event.instance) for event in recorder.calls) == sorted(
        [(onboarded.pk, "A"), (onboarded.pk, "B"), (other_onboarded.pk, "A"), (onboarded.pk, "A")]
    )
