"""The endpoint only needs PostgreSQL; the relay enqueues; bursts and duplicates end in one processing."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kombu.pools
import pytest
import requests
from django.test import Client
from django.utils import timezone
from kombu.exceptions import OperationalError

from config.celery import app as celery_app
from installations.models import Installation
from shoptet_api.client import ShoptetClient
from tests.fakes.shoptet import FakeShoptet
from tests.webhooks.conftest import Recorder, body_for, in_thread, onboard, post_signed
from webhooks import outbox, processing, signature, tasks
from webhooks.models import WebhookDelivery
from webhooks.registry import WebhookEvent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def use_broker(url: str) -> None:
    """Point Celery's publisher at `url` (its connection pool is rebuilt on the next publish).

    kombu keeps producer pools in a registry of its own, keyed by connection: without emptying it, the
    next publisher to the original broker gets back the producer pool whose connections were closed here.
    """
    celery_app.pool.force_close_all()  # type: ignore[attr-defined]
    kombu.pools.reset()
    celery_app.conf.update(broker_url=url)
    celery_app._pool = None  # type: ignore[attr-defined]
    celery_app.amqp._producer_pool = None  # type: ignore[attr-defined]


@pytest.fixture
def broker_switch() -> Iterator[None]:
    original = celery_app.conf.broker_url
    yield
    use_broker(original)


@pytest.fixture
def nothing_listens(settings, broker_switch: None) -> str:  # type: ignore[no-untyped-def]
    """Broker and cache on a port where nothing answers."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    use_broker(url)
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"socket_timeout": 1, "socket_connect_timeout": 1},
        }
    }
    return url


@pytest.mark.django_db
def test_the_endpoint_answers_with_broker_and_cache_down(
    client: Client, onboarded: Installation, nothing_listens: str
) -> None:
    started = time.monotonic()

    responses = [post_signed(client, onboarded, "order:update", f"X{i}") for i in range(20)]

    assert [r.status_code for r in responses] == [200] * 20
    assert time.monotonic() - started < 5
    assert WebhookDelivery.objects.filter(status="received").count() == 20


@pytest.mark.django_db
def test_the_relay_releases_what_it_could_not_enqueue(
    client: Client, onboarded: Installation, broker_switch: None
) -> None:
    for i in range(3):
        post_signed(client, onboarded, "order:update", f"X{i}")
    use_broker(f"redis://127.0.0.1:{free_port()}/0")

    with pytest.raises(OperationalError):
        tasks.relay_deliveries.apply(throw=True)

    assert WebhookDelivery.objects.filter(next_attempt_at__lte=timezone.now()).count() == 3
    assert len(outbox.claim_due_deliveries()) == 3


@pytest.mark.django_db
def test_claims_are_leases(client: Client, onboarded: Installation, other_onboarded: Installation) -> None:
    post_signed(client, onboarded, "order:update", "A")
    post_signed(client, onboarded, "order:update", "A")
    post_signed(client, other_onboarded, "order:update", "A")
    ids = list(WebhookDelivery.objects.order_by("pk").values_list("pk", flat=True))

    assert sorted(outbox.claim_due_deliveries()) == [ids[0], ids[2]]
    assert outbox.claim_due_deliveries() == []
    WebhookDelivery.objects.filter(pk=ids[2]).update(next_attempt_at=timezone.now())  # its task was lost
    assert outbox.claim_due_deliveries() == [ids[2]]
    assert Installation.objects.get(pk=onboarded.pk).last_webhook_at is not None


# ---------------------------------------------------------------------------
# Through a real HTTP server
# ---------------------------------------------------------------------------


def send(url: str, bodies: list[tuple[bytes, str]], senders: int) -> list[tuple[int, float]]:
    """POST every (body, signature) from `senders` threads with keep-alive; (status, seconds) for each."""
    chunks = [bodies[i::senders] for i in range(senders)]

    def run(chunk: list[tuple[bytes, str]]) -> list[tuple[int, float]]:
        results = []
        with requests.Session() as session:
            for body, sig in chunk:
                started = time.monotonic()
                response = session.post(
                    url,
                    data=body,
                    headers={"Content-Type": "application/json", signature.HEADER: sig},
                    timeout=30,
                )
                results.append((response.status_code, time.monotonic() - started))
        return results

    with ThreadPoolExecutor(senders) as pool:
        return [result for chunk_results in pool.map(run, chunks) for result in chunk_results]


@pytest.mark.django_db(transaction=True)
def test_a_thousand_copies_from_fifty_senders_are_one_processing_and_one_fetch(
    live_platform: str, installation: Installation, fake_shoptet: FakeShoptet, record
) -> None:
    def fetch(event: WebhookEvent) -> None:
        for code in event.codes:
            ShoptetClient(event.installation).get_order(code)

    recorder: Recorder = record("order:update", action=fetch)
    shop = onboard(installation)
    code = next(iter(fake_shoptet.eshops[shop.eshop_id].orders))
    body = body_for(shop.eshop_id, "order:update", code)
    sig = signature.sign(body, shop.webhook_signature_key)

    results = send(live_platform, [(body, sig)] * 1000, senders=50)

    assert [status for status, _ in results] == [200] * 1000
    ids = list(WebhookDelivery.objects.values_list("pk", flat=True))
    assert len(ids) == 1000
    # As if every copy had its own task, run by four workers at once.
    workers = []
    for seed in range(4):
        order = random.Random(seed).sample(ids, len(ids))
        workers.append(in_thread(lambda order=order: [processing.process_delivery(delivery_id=i) for i in order]))
    for worker in workers:
        worker.join(120)
    processing.process_delivery(delivery_id=ids[0])

    assert len(recorder.calls) == 1
    assert fake_shoptet.request_count("GET", r"/api/orders/") == 1
    assert WebhookDelivery.objects.filter(status="processed").count() == 1000


@pytest.fixture
def own_redis(tmp_path: Path, settings, broker_switch: None) -> Iterator[dict[str, object]]:  # type: ignore[no-untyped-def]
    """A Redis of this test's own, used as broker and cache, that the test may stop, freeze and restart."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    state: dict[str, object] = {"url": url}

    def start() -> None:
        process = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp_path],
            stdout=subprocess.DEVNULL,
        )
        state["process"] = process
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop() -> None:
        process = state.pop("process", None)
        if isinstance(process, subprocess.Popen):
            os.kill(process.pid, signal.SIGCONT)
            process.terminate()
            process.wait(10)

    state["start"], state["stop"] = start, stop
    start()
    use_broker(url)
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2},
        }
    }
    yield state
    stop()


def drain(queue_name: str) -> int:
    """Run every task message waiting in the broker queue, as a worker would."""
    handled = 0
    with celery_app.connection_for_read() as connection, connection.SimpleQueue(queue_name) as queue:
        while True:
            try:
                message = queue.get(timeout=1)
            except queue.Empty:
                return handled
            args, kwargs, _ = message.payload
            celery_app.tasks[message.headers["task"]].apply(args=args, kwargs=kwargs, throw=True)
            message.ack()
            handled += 1


@pytest.mark.django_db(transaction=True)
def test_redis_stopped_or_frozen_during_a_burst_loses_nothing(
    live_platform: str, installation: Installation, own_redis: dict, record
) -> None:
    recorder: Recorder = record("order:*")
    shop = onboard(installation)

    def burst(prefix: str) -> list[tuple[int, float]]:
        bodies = []
        for i in range(100):
            body = body_for(shop.eshop_id, "order:update", f"{prefix}-{i}")
            bodies.append((body, signature.sign(body, shop.webhook_signature_key)))
        return send(live_platform, bodies, senders=20)

    running = burst("running")
    os.kill(own_redis["process"].pid, signal.SIGSTOP)
    frozen = burst("frozen")
    own_redis["stop"]()
    stopped = burst("stopped")

    for results in (running, frozen, stopped):
        assert [status for status, _ in results] == [200] * 100
        assert max(seconds for _, seconds in results) < 2  # never waited on the frozen broker's timeouts
    assert WebhookDelivery.objects.filter(status="received").count() == 300

    own_redis["start"]()
    tasks.relay_deliveries.apply(throw=True)
    # One e-shop's 300 deliveries are one batch task (its end claims any that are left).
    assert drain("shoptet") >= 1

    assert WebhookDelivery.objects.filter(status="processed").count() == 300
    assert len(recorder.calls) == 300
    assert len({event.instance for event in recorder.calls}) == 300
