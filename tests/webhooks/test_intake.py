"""POST /shoptet/webhooks/: every call is stored; the answer depends on signature, body, e-shop and event."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta

import psycopg
import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from installations.models import Installation
from tests.fakes.shoptet import FakeShoptet
from tests.webhooks.conftest import (
    ENDPOINT,
    PRAGUE,
    Recorder,
    body_for,
    deliveries,
    fake_requests,
    post,
    post_signed,
    process_all,
    shoptet_time,
)
from webhooks import intake, signature
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db


def test_a_signed_delivery_is_stored_and_answered(
    client: Client, onboarded: Installation, fake_shoptet: FakeShoptet, record
) -> None:
    recorder: Recorder = record("order:*")
    before = fake_requests(fake_shoptet)
    created = datetime.now(PRAGUE).replace(microsecond=0) - timedelta(seconds=5)
    body = body_for(onboarded.eshop_id, "order:update", "2024000057", created=created)
    sig = signature.sign(body, onboarded.webhook_signature_key)

    response = post(client, body, sig, user_agent="Shoptet-Webhook")

    assert response.status_code == 200
    [delivery] = deliveries()
    assert response.json() == {"delivery": delivery.pk, "status": "received"}
    assert delivery.installation_id == onboarded.pk
    assert delivery.eshop_id == onboarded.eshop_id
    assert (delivery.event, delivery.event_instance, delivery.event_created) == ("order:update", "2024000057", created)
    assert bytes(delivery.body) == body
    assert delivery.headers == {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "User-Agent": "Shoptet-Webhook",
        "Shoptet-Webhook-Signature": sig,
    }
    assert delivery.source_ip == "127.0.0.1"
    assert (delivery.signature_valid, delivery.status, delivery.attempts, delivery.error) == (True, "received", 0, "")
    assert delivery.next_attempt_at == delivery.received_at
    assert len(delivery.idempotency_key) == 64
    # The request path neither processes nor calls Shoptet.
    assert recorder.calls == []
    assert fake_requests(fake_shoptet) == before


def test_event_instance_may_be_a_number(client: Client, onboarded: Installation) -> None:
    assert post_signed(client, onboarded, "addon:approve", onboarded.eshop_id).status_code == 200

    assert deliveries()[0].event_instance == str(onboarded.eshop_id)


@pytest.mark.parametrize("sig", [None, "", "0" * 40, "not-hex", "a" * 4000])
def test_bad_or_missing_signature_is_401_and_never_processed(
    client: Client, onboarded: Installation, sig: str | None
) -> None:
    body = body_for(onboarded.eshop_id, "order:update", "X1")

    response = post(client, body, sig)

    assert response.status_code == 401
    [delivery] = deliveries()
    assert (delivery.status, delivery.signature_valid, delivery.next_attempt_at) == ("rejected", False, None)
    assert delivery.error == "Missing or invalid Shoptet-Webhook-Signature."
    assert bytes(delivery.body) == body


def test_another_eshops_key_does_not_sign_for_this_one(
    client: Client, onboarded: Installation, other_onboarded: Installation
) -> None:
    body = body_for(onboarded.eshop_id, "order:update", "X1")

    assert post(client, body, signature.sign(body, other_onboarded.webhook_signature_key)).status_code == 401
    assert deliveries(onboarded)[0].status == "rejected"
    assert deliveries(other_onboarded) == []


def test_an_eshop_without_a_key_yet_accepts_nothing(client: Client, installation: Installation) -> None:
    body = body_for(installation.eshop_id, "order:update", "X1")

    assert post(client, body, signature.sign(body, "")).status_code == 401
    assert deliveries()[0].status == "rejected"


def test_unknown_eshop_is_404_and_stored(client: Client, onboarded: Installation) -> None:
    body = body_for(999_999, "order:update", "X1")

    response = post(client, body, signature.sign(body, onboarded.webhook_signature_key))

    assert response.status_code == 404
    [delivery] = deliveries()
    assert (delivery.status, delivery.eshop_id, delivery.installation_id) == ("rejected", 999_999, None)
    assert delivery.error == "No installation for this e-shop."


def test_unknown_event_is_200_and_ignored(client: Client, onboarded: Installation, record) -> None:
    recorder: Recorder = record("order:*")

    response = post_signed(client, onboarded, "order:teleport", "X1")

    assert response.status_code == 200
    [delivery] = deliveries()
    assert (delivery.status, delivery.signature_valid, delivery.error) == ("ignored", True, "Unknown event.")
    assert recorder.calls == []


@pytest.mark.parametrize(
    ("age", "accepted"),
    [
        (timedelta(hours=5, minutes=59), True),
        (timedelta(hours=6, minutes=1), False),
        (timedelta(days=30), False),
        (-timedelta(minutes=4), True),
        (-timedelta(minutes=6), False),
    ],
)
def test_event_created_must_be_in_the_replay_window(
    client: Client, onboarded: Installation, age: timedelta, accepted: bool
) -> None:
    response = post_signed(client, onboarded, "order:update", "X1", ago=age)

    [delivery] = deliveries()
    if accepted:
        assert (response.status_code, delivery.status) == (200, "received")
    else:
        assert (response.status_code, delivery.status) == (400, "rejected")
        assert delivery.error == "eventCreated is outside the accepted window."
        assert delivery.signature_valid is True


def test_the_replay_window_is_configurable(client: Client, onboarded: Installation, settings) -> None:
    settings.WEBHOOK_REPLAY_WINDOW_PAST = timedelta(minutes=1)

    assert post_signed(client, onboarded, "order:update", "X1", ago=timedelta(minutes=2)).status_code == 400


def test_the_previous_key_is_accepted_for_a_grace_window_after_renewal(
    client: Client, onboarded: Installation, settings
) -> None:
    old_key = onboarded.webhook_signature_key
    Installation.objects.filter(pk=onboarded.pk).update(signature_key_renewed_at=timezone.now())
    onboarded.refresh_from_db()
    onboarded.previous_webhook_signature_key = old_key
    onboarded.webhook_signature_key = "the-new-key"
    onboarded.save()
    body = body_for(onboarded.eshop_id, "order:update", "X1")

    assert post(client, body, signature.sign(body, "the-new-key")).status_code == 200
    assert post(client, body, signature.sign(body, old_key)).status_code == 200

    Installation.objects.filter(pk=onboarded.pk).update(
        signature_key_renewed_at=timezone.now() - settings.WEBHOOK_SIGNATURE_GRACE - timedelta(seconds=1)
    )
    intake.forget_signers()  # as after the few seconds a web process keeps an e-shop's keys
    assert post(client, body, signature.sign(body, old_key)).status_code == 401
    assert post(client, body, signature.sign(body, "the-new-key")).status_code == 200
    assert [d.status for d in deliveries()] == ["received", "received", "rejected", "received"]


def test_the_old_key_keeps_working_until_a_requested_renewal_happens(
    client: Client, onboarded: Installation, fake_shoptet: FakeShoptet
) -> None:
    from installations import services

    old_key = onboarded.webhook_signature_key
    services.request_signature_key_renewal(installation=onboarded)
    body = body_for(onboarded.eshop_id, "order:update", "X1")
    assert post(client, body, signature.sign(body, old_key)).status_code == 200

    services.onboard(installation=Installation.objects.get(pk=onboarded.pk))

    # The endpoint still keeps the old key only: a delivery under the new key makes it read again.
    renewed = Installation.objects.get(pk=onboarded.pk)
    assert renewed.webhook_signature_key == fake_shoptet.eshops[onboarded.eshop_id].signature_key != old_key
    assert renewed.previous_webhook_signature_key == old_key
    assert post(client, body, signature.sign(body, renewed.webhook_signature_key)).status_code == 200
    assert post(client, body, signature.sign(body, old_key)).status_code == 200  # still inside the grace window


def test_webhooks_of_an_uninstalled_eshop_are_stored_not_processed(client: Client, onboarded: Installation) -> None:
    onboarded.transition_to(Installation.Status.UNINSTALLED, cause="test")

    response = post_signed(client, onboarded, "order:update", "X1")

    assert response.status_code == 200
    [delivery] = deliveries()
    assert (delivery.status, delivery.error) == ("ignored", "The e-shop is uninstalled: stored, not processed.")


def test_webhooks_of_a_suspended_eshop_are_held(client: Client, onboarded: Installation) -> None:
    onboarded.transition_to(Installation.Status.SUSPENDED, cause="test")

    assert post_signed(client, onboarded, "order:update", "X1").status_code == 200
    assert deliveries()[0].status == "received"


def test_an_oversized_body_is_413_and_not_kept(client: Client, onboarded: Installation, settings) -> None:
    body = body_for(onboarded.eshop_id, "order:massUpdate", json.dumps(["C"] * 200_000))
    assert len(body) > settings.WEBHOOK_MAX_BODY_BYTES

    response = post(client, body, signature.sign(body, onboarded.webhook_signature_key))

    assert response.status_code == 413
    [delivery] = deliveries()
    assert (delivery.status, bytes(delivery.body), delivery.event) == ("rejected", b"", "")


def test_a_body_of_exactly_the_cap_is_read(client: Client, onboarded: Installation, settings) -> None:
    settings.WEBHOOK_MAX_BODY_BYTES = 300
    body = body_for(onboarded.eshop_id, "order:update", "X")
    body = body[:-2] + b" " * (300 - len(body)) + body[-2:]
    assert len(body) == 300

    assert post(client, body, signature.sign(body, onboarded.webhook_signature_key)).status_code == 200


def test_only_post(client: Client, onboarded: Installation) -> None:
    assert client.get(ENDPOINT).status_code == 405
    assert client.put(ENDPOINT, data=b"{}").status_code == 405
    assert deliveries() == []


def valid_fields(installation: Installation) -> dict[str, object]:
    return {
        "eshopId": installation.eshop_id,
        "event": "order:update",
        "eventCreated": shoptet_time(),
        "eventInstance": "X1",
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("eshopId", "abc"),
        ("eshopId", True),
        ("eshopId", -1),
        ("eshopId", 0),
        ("eshopId", 2**64),
        ("eshopId", 1.5),
        ("eshopId", None),
        ("event", 123),
        ("event", ""),
        ("event", "order update"),
        ("event", "order:update\x00"),
        ("event", "a:" + "b" * 70),
        ("event", ["order:update"]),
        ("eventCreated", "yesterday"),
        ("eventCreated", "2019-09-23T22:01:36"),
        ("eventCreated", 1569268896),
        ("eventCreated", "9" * 100),
        ("eventInstance", None),
        ("eventInstance", True),
        ("eventInstance", 1.5),
        ("eventInstance", {"code": "X1"}),
        ("eventInstance", ["X1"]),
        ("eventInstance", "X\x001"),
        ("eventInstance", "\ud800"),
    ],
)
def test_wrong_fields_are_400(client: Client, onboarded: Installation, field: str, value: object) -> None:
    fields = {**valid_fields(onboarded), field: value}
    body = json.dumps(fields).encode()

    response = post(client, body, signature.sign(body, onboarded.webhook_signature_key))

    assert response.status_code == 400
    [delivery] = deliveries()
    assert delivery.status == "rejected"
    assert delivery.installation_id is None
    assert delivery.error.startswith(field)
    assert bytes(delivery.body) == body


@pytest.mark.parametrize("missing", ["eshopId", "event", "eventCreated", "eventInstance"])
def test_missing_fields_are_400(client: Client, onboarded: Installation, missing: str) -> None:
    fields = valid_fields(onboarded)
    del fields[missing]
    body = json.dumps(fields).encode()

    response = post(client, body, signature.sign(body, onboarded.webhook_signature_key))

    assert response.status_code == 400
    assert deliveries()[0].error == f"Missing fields: {missing}."


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2, 3]",
        b'"a string"',
        b"null",
        b"\xff\xfe\x00{",
        b'{"eshopId": 1',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"eshopId": ' + b"9" * 5000 + b"}",
        b"\x00" * 64,
    ],
)
def test_malformed_bodies_are_400(client: Client, onboarded: Installation, body: bytes) -> None:
    response = post(client, body, "0" * 40)

    assert response.status_code == 400
    [delivery] = deliveries()
    assert (delivery.status, delivery.signature_valid) == ("rejected", False)


def test_malicious_headers_are_stored_harmlessly(client: Client, onboarded: Installation) -> None:
    body = body_for(onboarded.eshop_id, "order:update", "X1")
    sig = signature.sign(body, onboarded.webhook_signature_key)

    response = post(client, body, sig, user_agent="<script>alert(1)</script>" + "x" * 5000, x_forwarded_for="1.2.3.4")

    assert response.status_code == 200
    delivery = deliveries()[0]
    assert delivery.headers["User-Agent"] == ("<script>alert(1)</script>" + "x" * 5000)[:512]
    assert delivery.headers["X-Forwarded-For"] == "1.2.3.4"


def test_random_bodies_never_give_a_server_error(client: Client, onboarded: Installation, settings) -> None:
    settings.WEBHOOK_REJECTIONS_PER_MINUTE = 0  # 300 calls from one address: every one must be looked at
    rng = random.Random(20261124)
    key = onboarded.webhook_signature_key
    atoms: list[object] = [
        None,
        True,
        0,
        -1,
        2**70,
        1.5,
        "",
        "\x00",
        "order:update",
        "addon:uninstall",
        "\ud83d",
        "ž" * 300,
        onboarded.eshop_id,
        shoptet_time(),
        [],
        {},
    ]
    statuses = set()
    for index in range(300):
        choice = index % 3
        if choice == 0:
            body = rng.randbytes(rng.randint(0, 400))
        else:
            fields: dict[str, object] = valid_fields(onboarded)
            for name in rng.sample(list(fields), rng.randint(1, 4)):
                if rng.random() < 0.2:
                    del fields[name]
                else:
                    fields[name] = rng.choice(atoms)
            if rng.random() < 0.3:
                fields[rng.choice(["extra", "payload", "eshopId"])] = rng.choice(atoms)
            body = json.dumps(fields).encode()
        sig = signature.sign(body, key) if choice == 2 else rng.choice(["", "0" * 40, "zz"])

        response = post(client, body, sig)

        assert response.status_code in (200, 400, 401, 404), (body, response.status_code)
        statuses.add(response.status_code)
    assert WebhookDelivery.objects.count() == 300
    assert statuses >= {200, 400, 401}


def test_after_a_reinstall_the_endpoint_reads_the_status_afresh(client: Client, onboarded: Installation) -> None:
    onboarded.transition_to(Installation.Status.UNINSTALLED, cause="test")
    assert post_signed(client, onboarded, "order:update", "X1").status_code == 200  # kept as uninstalled
    Installation.objects.get(pk=onboarded.pk).transition_to(Installation.Status.ACTIVE, cause="reinstall")

    assert post_signed(client, onboarded, "order:update", "X2").status_code == 200

    assert [d.status for d in deliveries()] == ["ignored", "received"]


def test_a_just_uninstalled_eshop_kept_as_active_is_still_not_processed(
    client: Client, onboarded: Installation, record
) -> None:
    recorder: Recorder = record("order:*")
    assert post_signed(client, onboarded, "order:update", "X1").status_code == 200  # kept as active
    Installation.objects.get(pk=onboarded.pk).transition_to(Installation.Status.UNINSTALLED, cause="test")

    assert post_signed(client, onboarded, "order:update", "X2").status_code == 200
    process_all()

    assert [d.status for d in deliveries()] == ["ignored", "ignored"]
    assert recorder.calls == []


@pytest.mark.django_db(transaction=True)
def test_a_connection_broken_since_the_last_call_is_replaced_without_losing_the_delivery(
    client: Client, onboarded: Installation
) -> None:
    # The endpoint skips Django's `SELECT 1` before its INSERT; a server that dropped the kept connection
    # (a restart, an idle timeout) must cost a new connection, not the delivery.
    assert post_signed(client, onboarded, "order:update", "2024000001").status_code == 200
    backend = connection.connection.info.backend_pid
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [backend])

    response = post_signed(client, onboarded, "order:update", "2024000002")

    assert response.status_code == 200
    assert connection.connection.info.backend_pid != backend
    stored = {delivery.event_instance: delivery.status for delivery in deliveries()}
    assert stored == {"2024000001": "received", "2024000002": "received"}
    assert WebhookDelivery.objects.get(pk=response.json()["delivery"]).event_instance == "2024000002"


def test_the_stored_row_is_the_one_the_orm_would_write(client: Client, onboarded: Installation) -> None:
    response = post_signed(client, onboarded, "order:update", "2024000003")

    delivery = WebhookDelivery.objects.get(pk=response.json()["delivery"])
    # Defaults of fields the endpoint never sets are the model's own, as after save().
    assert (delivery.source, delivery.attempts, delivery.replay_requested, delivery.body_truncated) == (
        "webhook",
        0,
        False,
        False,
    )
    assert (delivery.processed_at, delivery.duplicate_of_id, delivery.payload_purged_at) == (None, None, None)
    assert delivery.received_at is not None
    assert delivery.received_at <= timezone.now()
