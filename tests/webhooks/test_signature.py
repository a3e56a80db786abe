"""The signature helper: Shoptet's SDK test vector, and verification of the raw bytes, never re-serialised JSON."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from installations.models import Installation
from tests.webhooks.conftest import body_for, post
from webhooks import signature
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db

SDK_KEY = "61d1175f54c47dd67df14c17002a17b2"
SDK_BODY = (
    b'{"eshopId":315185,"event":"addon:uninstall","eventCreated":"2019-09-23T22:01:36+0200","eventInstance":"315185"}'
)
SDK_SIGNATURE = "a0e0a3e7689bd4c80e4d6ffcccb05235b864e1d0"


def test_the_sdk_test_vector() -> None:
    assert signature.sign(SDK_BODY, SDK_KEY) == SDK_SIGNATURE
    signature.verify(SDK_BODY, SDK_SIGNATURE, SDK_KEY)
    signature.verify(SDK_BODY, SDK_SIGNATURE.upper(), SDK_KEY)


@pytest.mark.parametrize(
    ("body", "sig", "key"),
    [
        (SDK_BODY, SDK_SIGNATURE, "61d1175f54c47dd67df14c17002a17b3"),
        (SDK_BODY + b" ", SDK_SIGNATURE, SDK_KEY),
        (SDK_BODY, SDK_SIGNATURE[:-1], SDK_KEY),
        (SDK_BODY, "", SDK_KEY),
        (SDK_BODY, SDK_SIGNATURE, ""),
        (SDK_BODY, "žluťoučký kůň", SDK_KEY),
        (SDK_BODY, "sha1=" + SDK_SIGNATURE, SDK_KEY),
    ],
)
def test_anything_else_is_invalid(body: bytes, sig: str, key: str) -> None:
    with pytest.raises(signature.InvalidSignature):
        signature.verify(body, sig, key)


def test_verify_any_accepts_each_key_and_nothing_else() -> None:
    signature.verify_any(SDK_BODY, SDK_SIGNATURE, ["other-key", SDK_KEY])
    with pytest.raises(signature.InvalidSignature):
        signature.verify_any(SDK_BODY, SDK_SIGNATURE, ["other-key"])
    with pytest.raises(signature.InvalidSignature):
        signature.verify_any(SDK_BODY, SDK_SIGNATURE, [])


def test_the_raw_body_is_verified_not_the_reserialised_json(client: Client, onboarded: Installation) -> None:
    # Shoptet's PHP escapes "/" as "\/": json.loads + json.dumps would not give back the signed bytes.
    body = body_for(onboarded.eshop_id, "order:update", "2024/0001")
    assert b"2024\\/0001" in body
    reserialised = json.dumps(json.loads(body)).encode()
    key = onboarded.webhook_signature_key
    assert signature.sign(reserialised, key) != signature.sign(body, key)

    assert post(client, body, signature.sign(body, key)).status_code == 200
    assert post(client, reserialised, signature.sign(body, key)).status_code == 401

    accepted, refused = WebhookDelivery.objects.order_by("pk")
    assert (accepted.status, accepted.event_instance, bytes(accepted.body)) == ("received", "2024/0001", body)
    assert (refused.status, refused.signature_valid) == ("rejected", False)
