"""Webhooks processed in batches, one task per e-shop and round: coalescing, exact final state, fairness, and a
worker killed mid-batch (real PostgreSQL, Redis, Celery worker processes and the fake Shoptet)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from config.celery import app as celery_app
from installations import services as installation_services
from installations.models import Installation
from sync import tasks as sync_tasks
from sync.models import Order
from tests.conftest import install_via_fake
from tests.fakes.shoptet import FakeShoptet
from tests.sync.conftest import mirrored, shoptet_documents
from tests.sync.test_killed_import import PROJECT_ROOT, worker_environment
from tests.webhooks.conftest import post_signed
from webhooks import outbox as webhook_outbox
from webhooks import tasks as webhook_tasks
from webhooks.models import WebhookDelivery

QUEUES = ("priority", "default", "shoptet")


def queued_messages() -> Iterator[tuple[str, list[Any], str]]:
    """Take every task message waiting in the broker, queue by queue, in order: (task, args, queue).

    Every message these tests wait for was published before the call. A non-blocking read is one RPOP; a
    blocking one is a BRPOP whose answer, if the timeout ends before it is read on a loaded machine, is
    popped from the queue and never delivered, and that task goes missing.
    """
    with celery_app.connection_for_read() as broker:
        for name in QUEUES:
            with broker.SimpleQueue(name) as queue:
                while True:
                    try:
                        message = queue.get_nowait()
                    except queue.Empty:
                        break
                    args, _, _ = message.payload
                    message.ack()
                    yield message.headers["task"], list(args), name


def run_queued() -> dict[str, int]:
    """Run what the relays enqueued as workers would, until nothing is left; how many tasks of each name ran."""
    ran: dict[str, int] = {}
    while messages := list(queued_messages()):
        for task, args, _ in messages:
            celery_app.tasks[task].apply(args=tuple(args), throw=True)
            ran[task] = ran.get(task, 0) + 1
    return ran


def relay_and_run() -> dict[str, int]:
    webhook_tasks.relay_deliveries.apply(throw=True)
    return run_queued()


@pytest.fixture
def empty_queues() -> Iterator[None]:
    # These tests take the broker's messages themselves; a worker left running by another test would take
    # some of them first, and the work would go missing here without a word.
    stray = celery_app.control.ping(timeout=0.5)
    assert not stray, f"a Celery worker is consuming the test broker: {stray}"
    list(queued_messages())
    yield
    list(queued_messages())


@pytest.mark.django_db(transaction=True)
def test_a_thousand_copies_of_one_delivery_and_fifty_others_make_one_batch_one_refresh_run_one_fetch_each(
    client: Client, fake_shoptet: FakeShoptet, empty_queues: None
) -> None:
    shop = install_via_fake(fake_shoptet, 710001)
    installation_services.onboard(installation=shop)
    shop = Installation.objects.get(pk=shop.pk)
    copied = fake_shoptet.create_order(shop.eshop_id, webhook=False)
    others = [fake_shoptet.create_order(shop.eshop_id, webhook=False) for _ in range(50)]
    first = post_signed(client, shop, "order:create", copied)
    assert first.status_code == 200
    body = bytes(WebhookDelivery.objects.get().body)
    # Shoptet sends the very same notification again and again: same body, same signature.
    WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(**{**original, "id": None})
            for original in WebhookDelivery.objects.values().filter(body=body)
            for _ in range(999)
        ]
    )
    for code in others:
        post_signed(client, shop, "order:create", code)

    ran = relay_and_run()

    # One task per batch of the e-shop's deliveries (not one per entity), at most one refresh task per batch.
    batches = ran["webhooks.tasks.process_batch"]
    assert batches <= -(-1050 // webhook_outbox.BATCH_SIZE)
    assert ran.get("sync.tasks.refresh_documents", 0) <= batches
    assert "webhooks.tasks.process_delivery" not in ran
    assert fake_shoptet.request_count("GET", rf"/api/orders/{copied}") == 1
    assert all(fake_shoptet.request_count("GET", rf"/api/orders/{code}") == 1 for code in others)
    assert WebhookDelivery.objects.filter(status="processed").count() == 1050
    assert WebhookDelivery.objects.filter(duplicate_of__isnull=False).count() == 999
    assert set(mirrored(shop, "orders")) == {copied, *others}


@pytest.mark.django_db(transaction=True)
def test_create_update_delete_of_200_orders_in_random_order_ends_in_the_exact_state(
    client: Client, fake_shoptet: FakeShoptet, empty_queues: None
) -> None:
    shop = install_via_fake(fake_shoptet, 710002)
    installation_services.onboard(installation=shop)
    shop = Installation.objects.get(pk=shop.pk)
    rng = random.Random(710002)
    codes = [fake_shoptet.create_order(shop.eshop_id, webhook=False) for _ in range(200)]
    events = [("order:create", code) for code in codes]
    for code in codes:
        for _ in range(rng.randint(0, 3)):
            fake_shoptet.update_order(shop.eshop_id, code, webhook=False, email=f"{rng.random()}@example.com")
            events.append(("order:update", code))
    for code in rng.sample(codes, 60):
        fake_shoptet.delete_order(shop.eshop_id, code, webhook=False)
        events.append(("order:delete", code))
    rng.shuffle(events)
    # Shoptet sends unordered: the events arrive in rounds, each round processed before the next arrives.
    for start in range(0, len(events), 150):
        for event, code in events[start : start + 150]:
            fake_shoptet.advance_time(1)  # a distinct eventCreated each, so none is a copy of another
            assert post_signed(client, shop, event, code).status_code == 200
        relay_and_run()

    assert not WebhookDelivery.objects.filter(status="received").exists()
    assert mirrored(shop, "orders") == shoptet_documents(fake_shoptet, shop, "orders")
    # A deleted order is stored as deleted, or not at all when its create was processed after the delete.
    gone = set(codes) - set(fake_shoptet.eshops[shop.eshop_id].orders)
    assert len(gone) == 60
    assert not Order.objects.filter(installation=shop, code__in=gone, deleted_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_a_second_e_shop_is_processed_while_the_first_still_has_thousands_due(
    client: Client, fake_shoptet: FakeShoptet, empty_queues: None
) -> None:
    busy = install_via_fake(fake_shoptet, 710003)
    quiet = install_via_fake(fake_shoptet, 710004)
    for shop in (busy, quiet):
        installation_services.onboard(installation=shop)
    busy, quiet = (Installation.objects.get(pk=shop.pk) for shop in (busy, quiet))
    post_signed(client, busy, "order:update", "BUSY-0")
    template = WebhookDelivery.objects.values().get()
    now = timezone.now()
    WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(
                **{
                    **template,
                    "id": None,
                    "event_instance": f"BUSY-{index}",
                    "idempotency_key": f"busy-{index}",
                    "next_attempt_at": now - timedelta(minutes=1),
                }
            )
            for index in range(1, 3000)
        ]
    )
    code = fake_shoptet.create_order(quiet.eshop_id, webhook=False)
    assert post_signed(client, quiet, "order:create", code).status_code == 200

    webhook_tasks.relay_deliveries.apply(throw=True)
    messages = list(queued_messages())
    # Every e-shop with work due gets a task in the round, the busy one a bounded share.
    batches = [args for task, args, _ in messages if task == "webhooks.tasks.process_batch"]
    assert sorted(args[0] for args in batches) == sorted([busy.pk, quiet.pk])
    assert all(len(args[1]) <= webhook_outbox.BATCH_SIZE for args in batches)
    quiet_batch = next(args for args in batches if args[0] == quiet.pk)
    webhook_tasks.process_batch.apply(args=tuple(quiet_batch), throw=True)
    run_queued()  # the quiet e-shop's refresh; the busy e-shop's batch was taken out of the queue above

    assert set(mirrored(quiet, "orders")) == {code}
    assert WebhookDelivery.objects.filter(installation=busy, status="received").count() >= 2500


def start_worker() -> subprocess.Popen[bytes]:
    """A Celery worker as deployed (prefork, 2 processes), in a process group of its own."""
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "warning", "-Q", ",".join(QUEUES)]
    return subprocess.Popen(
        [*command, "--concurrency", "2", "--prefetch-multiplier", "1", "-n", f"batch-{time.monotonic_ns()}@%h"],
        cwd=PROJECT_ROOT,
        env=worker_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def beat_tick() -> None:
    """What beat sends every few seconds, sent from here."""
    webhook_tasks.relay_deliveries.delay()
    sync_tasks.relay_sync_work.delay()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs the PostgreSQL of `make test`")
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing(
    client: Client, fake_shoptet: FakeShoptet, empty_queues: None
) -> None:
    shop = install_via_fake(fake_shoptet, 710005)
    installation_services.onboard(installation=shop)
    shop = Installation.objects.get(pk=shop.pk)
    codes = [fake_shoptet.create_order(shop.eshop_id, webhook=False) for _ in range(300)]
    for code in codes:
        assert post_signed(client, shop, "order:create", code).status_code == 200
    # Slow document fetches, so that the kill falls in the middle of the work.
    fake_shoptet.add_fault("GET", r"/api/orders/", 0, times=100_000, delay=0.05)

    worker = start_worker()
    try:
        deadline = time.monotonic() + 60
        ticked = 0.0
        # Killed in the middle of the second round of fetches, with requests in flight and slots held.
        while Order.objects.filter(installation=shop).count() < 40:
            assert worker.poll() is None
            assert time.monotonic() < deadline, "the worker stored nothing"
            if time.monotonic() - ticked > 0.5:
                beat_tick()
                ticked = time.monotonic()
            time.sleep(0.02)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    stored_at_kill = Order.objects.filter(installation=shop).count()
    assert stored_at_kill < len(codes), "the kill came after the work was done"

    replacement = start_worker()
    started = time.monotonic()
    try:
        while True:
            converged = (
                Order.objects.filter(installation=shop).count() == len(codes)
                and not WebhookDelivery.objects.filter(installation=shop, status="received").exists()
            )
            if converged or time.monotonic() - started > 90:
                break
            beat_tick()
            time.sleep(1)
        took = time.monotonic() - started
    finally:
        os.killpg(replacement.pid, signal.SIGKILL)
        replacement.wait(timeout=30)

    print(f"\nworker killed with {stored_at_kill} of {len(codes)} orders stored; converged {took:.1f}s later")
    assert converged, f"not converged {took:.0f}s after the new worker started"
    assert took < 60
    assert WebhookDelivery.objects.filter(installation=shop, status="processed").count() == len(codes)
    assert not WebhookDelivery.objects.filter(installation=shop, status__in=["failed", "ignored"]).exists()
    assert mirrored(shop, "orders") == shoptet_documents(fake_shoptet, shop, "orders")
