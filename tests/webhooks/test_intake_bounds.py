"""What anyone can make the endpoint store: a bounded prefix of what it rejects, briefly, and only so often."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from config import metrics
from installations.models import Installation
from rollups import services as rollups
from shoptet_api.client import ShoptetClient
from shoptet_api.errors import ServerError
from tests.fakes.shoptet import FakeShoptet
from tests.test_metrics import metric_lines
from tests.test_settings import run_manage
from tests.webhooks.conftest import ENDPOINT, body_for, deliveries, post, post_signed, process_all
from tests.webhooks.test_outbox import free_port
from webhooks import signature, tasks
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db


def padded_body(installation: Installation, size: int, event: str = "order:update") -> bytes:
    """A well-formed notification of about `size` bytes: the padding is in eventInstance."""
    body = body_for(installation.eshop_id, event, "X")
    return body_for(installation.eshop_id, event, "X" * (size - len(body) + 1))


def test_an_unsigned_255_kib_body_keeps_a_prefix_its_length_and_digest(
    client: Client, onboarded: Installation, settings
) -> None:
    body = padded_body(onboarded, 255 * 1024)
    assert len(body) < settings.WEBHOOK_MAX_BODY_BYTES

    response = post(client, body)

    assert response.status_code == 401
    [delivery] = deliveries()
    kept = bytes(delivery.body)
    assert len(kept) == settings.WEBHOOK_REJECTED_BODY_PREFIX
    assert kept == body[: len(kept)]
    assert (delivery.body_length, delivery.body_sha256) == (len(body), hashlib.sha256(body).hexdigest())
    assert delivery.body_truncated is True
    assert len(delivery.event_instance) <= settings.WEBHOOK_REJECTED_BODY_PREFIX
    assert delivery.error == "Missing or invalid Shoptet-Webhook-Signature."


@pytest.mark.parametrize(("character", "shift"), [("ž", 1), ("€", 1), ("€", 2), ("😀", 3)])
def test_the_prefix_ends_on_a_character_boundary(
    client: Client, onboarded: Installation, settings, character: str, shift: int
) -> None:
    settings.WEBHOOK_REJECTED_BODY_PREFIX = 64
    body = b"!" * shift + (character * 100).encode()

    post(client, body, "0" * 40)

    kept = bytes(deliveries()[0].body)
    assert kept.decode("utf-8") == "!" * shift + character * ((64 - shift) // len(character.encode()))
    assert body.startswith(kept)


def test_an_ignored_delivery_keeps_a_prefix_too(client: Client, onboarded: Installation, settings) -> None:
    body = padded_body(onboarded, 100_000, event="order:teleport")

    response = post(client, body, signature.sign(body, onboarded.webhook_signature_key))

    assert response.status_code == 200
    [delivery] = deliveries()
    assert (delivery.status, delivery.signature_valid) == ("ignored", True)
    assert bytes(delivery.body) == body[: settings.WEBHOOK_REJECTED_BODY_PREFIX]
    assert (delivery.body_length, delivery.body_truncated) == (len(body), True)


def test_a_valid_delivery_keeps_its_whole_body(client: Client, onboarded: Installation) -> None:
    body = body_for(onboarded.eshop_id, "order:massUpdate", json.dumps([f"2026{n:06}" for n in range(10_000)]))

    response = post(client, body, signature.sign(body, onboarded.webhook_signature_key))

    assert response.status_code == 200
    [delivery] = deliveries()
    assert (delivery.status, bytes(delivery.body)) == ("received", body)
    assert (delivery.body_length, delivery.body_sha256) == (len(body), hashlib.sha256(body).hexdigest())
    assert delivery.body_truncated is False


def test_the_admin_and_the_api_say_the_body_was_cut(
    client: Client, admin_client: Client, staff_client: Client, onboarded: Installation
) -> None:
    body = padded_body(onboarded, 50_000)
    post(client, body)
    [delivery] = deliveries()

    page = admin_client.get(reverse("admin:webhooks_webhookdelivery_change", args=[delivery.pk])).content.decode()
    [item] = staff_client.get("/api/v1/webhook-deliveries/").json()["results"]

    assert f"of {len(body)} bytes kept" in page
    assert hashlib.sha256(body).hexdigest() in page
    assert (item["body_length"], item["body_sha256"], item["body_truncated"]) == (
        len(body),
        hashlib.sha256(body).hexdigest(),
        True,
    )


def test_rejections_over_the_limit_get_429_and_store_nothing(client: Client, onboarded: Installation, settings) -> None:
    settings.WEBHOOK_REJECTIONS_PER_MINUTE = 5
    body = body_for(onboarded.eshop_id, "order:update", "X1")

    answers = [post(client, body, "0" * 40) for _ in range(8)]

    assert [answer.status_code for answer in answers] == [401] * 5 + [429] * 3
    assert answers[-1]["Retry-After"] == "60"
    assert answers[-1].json() == {
        "delivery": None,
        "status": "rate_limited",
        "message": "Too many rejected deliveries from this address; retry later.",
    }
    assert WebhookDelivery.objects.count() == 5
    assert metrics.snapshot("webhook_deliveries_rate_limited") == {'{"reason": "bad_signature"}': 3.0}


def test_valid_deliveries_are_never_rate_limited(client: Client, onboarded: Installation, settings) -> None:
    settings.WEBHOOK_REJECTIONS_PER_MINUTE = 1
    post(client, b"not json")
    assert post(client, b"not json").status_code == 429

    assert post_signed(client, onboarded, "order:update", "X1").status_code == 200
    assert post_signed(client, onboarded, "order:teleport", "X1").status_code == 200
    assert post_signed(client, onboarded, "order:update", "X2").status_code == 200

    assert [d.status for d in deliveries()] == ["rejected", "received", "ignored", "received"]


def test_the_limit_is_per_source_address(client: Client, onboarded: Installation, settings) -> None:
    settings.WEBHOOK_REJECTIONS_PER_MINUTE = 1

    def reject_from(address: str) -> int:
        return client.post(ENDPOINT, data=b"{}", content_type="application/json", REMOTE_ADDR=address).status_code

    assert [reject_from("10.0.0.1"), reject_from("10.0.0.1"), reject_from("10.0.0.2")] == [400, 429, 400]
    # One host holds a whole IPv6 /64.
    assert [reject_from("2001:db8::1"), reject_from("2001:db8::ffff"), reject_from("2001:db8:0:1::1")] == [
        400,
        429,
        400,
    ]
    # An IPv4 caller seen through a dual-stack socket is the same host.
    assert [reject_from("::ffff:10.0.0.2"), reject_from("::ffff:10.0.0.3")] == [429, 400]
    assert sorted(str(d.source_ip) for d in deliveries()) == [
        "10.0.0.1",
        "10.0.0.2",
        "2001:db8:0:1::1",
        "2001:db8::1",
        "::ffff:10.0.0.3",
    ]


def test_x_forwarded_for_counts_only_behind_a_trusted_proxy(client: Client, onboarded: Installation, settings) -> None:
    settings.WEBHOOK_REJECTIONS_PER_MINUTE = 1

    def reject_via(forwarded_for: str) -> int:
        return int(post(client, b"{}", x_forwarded_for=forwarded_for).status_code)

    # Trusting no proxy, a forged header changes nothing: both come from 127.0.0.1.
    assert [reject_via("198.51.100.1"), reject_via("198.51.100.2")] == [400, 429]

    settings.TRUSTED_PROXY_COUNT = 1
    assert [reject_via("192.0.2.7, 198.51.100.3"), reject_via("192.0.2.7, 198.51.100.4")] == [400, 400]
    assert reject_via("203.0.113.9, 198.51.100.4") == 429
    assert [d.source_ip for d in deliveries()] == ["127.0.0.1", "198.51.100.3", "198.51.100.4"]


def test_with_the_cache_down_rejections_are_still_answered_and_bounded(
    client: Client, onboarded: Installation, settings
) -> None:
    settings.WEBHOOK_REJECTIONS_PER_MINUTE = 1
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"socket_timeout": 1, "socket_connect_timeout": 1},
        }
    }
    body = padded_body(onboarded, 20_000)

    answers = [post(client, body).status_code for _ in range(3)]
    signed = post(client, body, signature.sign(body, onboarded.webhook_signature_key))

    assert answers == [401, 401, 401]
    assert signed.status_code == 200
    assert [len(bytes(d.body)) for d in deliveries()] == [settings.WEBHOOK_REJECTED_BODY_PREFIX] * 3 + [len(body)]


def aged(hours: float) -> None:
    WebhookDelivery.objects.update(received_at=timezone.now() - timedelta(hours=hours))


def test_rejected_deliveries_are_deleted_and_ignored_ones_purged_after_their_short_retention(
    client: Client, onboarded: Installation, other_onboarded: Installation, settings
) -> None:
    post(client, body_for(onboarded.eshop_id, "order:update", "rejected"), "0" * 40)
    post_signed(client, onboarded, "order:teleport", "ignored")
    post_signed(client, other_onboarded, "order:update", "processed")
    process_all()
    aged(hours=2)

    tasks.purge_payloads.apply(throw=True)
    assert [d.event_instance for d in deliveries()] == ["rejected", "ignored", "processed"]  # within a day

    settings.REJECTED_DELIVERY_RETENTION = timedelta(hours=1)
    tasks.purge_payloads.apply(throw=True)

    kept = {d.event_instance: (d.status, bytes(d.body) != b"", d.payload_purged_at is not None) for d in deliveries()}
    assert kept == {"ignored": ("ignored", False, True), "processed": ("processed", True, False)}


def test_unknown_event_names_share_one_metric_label(client: Client, onboarded: Installation, settings) -> None:
    settings.WEBHOOK_REJECTIONS_PER_MINUTE = 0
    for n in range(30):
        post(client, body_for(onboarded.eshop_id, f"evil{n}:x", "X1"))
    post_signed(client, onboarded, "order:update", "X1")

    rollups.roll_up(now=timezone.now() + rollups.COMMIT_LAG)  # the received one is still under way
    lines = [line for line in metric_lines(client) if line.startswith("webhook_deliveries")]

    assert lines == [
        'webhook_deliveries_total{event="other",status="rejected"} 30.0',
        "webhook_deliveries_pending 1.0",
    ]


def test_an_http_status_outside_http_is_one_metric_label(
    installation: Installation, fake_shoptet: FakeShoptet, fast_backoff: Any
) -> None:
    fake_shoptet.add_fault("GET", r"/api/eshop", 999, times=10)

    with pytest.raises(ServerError):
        ShoptetClient(installation).get_eshop()

    assert {json.loads(field)["status"] for field in metrics.snapshot("shoptet_api_requests")} == {"other"}


def test_the_limits_come_from_the_environment() -> None:
    shown = run_manage(
        "shell",
        "-c",
        "from django.conf import settings as s; "
        "print(s.REJECTED_DELIVERY_RETENTION, s.WEBHOOK_REJECTIONS_PER_MINUTE, s.TRUSTED_PROXY_COUNT)",
        REJECTED_DELIVERY_RETENTION_HOURS="6",
        WEBHOOK_REJECTIONS_PER_MINUTE="5",
        TRUSTED_PROXY_COUNT="1",
    )
    refused = run_manage("check", REJECTED_DELIVERY_RETENTION_HOURS="0")

    assert shown.stdout.strip().splitlines()[-1] == "6:00:00 5 1"
    assert refused.returncode != 0
    assert "REJECTED_DELIVERY_RETENTION_HOURS must be at least 1." in refused.stderr
