"""Bodies the REST API cannot take get a 4xx in its error body, never a 500, and start nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from installations.models import Installation
from sync.models import SyncJob
from tests.api.test_contract import assert_error
from tests.conftest import ESHOP_ID

pytestmark = pytest.mark.django_db

SYNC = f"/api/v1/installations/{ESHOP_ID}/sync/"


def post(client: Client, body: bytes, content_type: str = "application/json") -> Any:
    return client.generic("POST", SYNC, body, content_type=content_type)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 10_000 + b"]" * 10_000,
        b'{"resource": ' * 10_000 + b'"orders"' + b"}" * 10_000,
    ],
    ids=["arrays", "objects"],
)
def test_deeply_nested_json_is_a_400(staff_client: Client, installation: Installation, body: bytes) -> None:
    response = post(staff_client, body)

    assert_error(response, 400, "parse_error")
    assert response.json()["message"] == "JSON parse error - nested too deeply."
    assert SyncJob.objects.count() == 0


@pytest.mark.parametrize(
    "body",
    [b'{"resource": "\\ud800", "mode": "snapshot"}', b'{"resource": "orders", "mode": "snapshot", "\\udfff": 1}'],
    ids=["value", "key"],
)
def test_a_lone_surrogate_is_a_400(staff_client: Client, installation: Installation, body: bytes) -> None:
    response = post(staff_client, body)

    assert_error(response, 400, "parse_error")
    assert response.json()["message"] == "JSON parse error - a string holds a lone surrogate."
    assert SyncJob.objects.count() == 0


def test_an_oversized_body_is_a_413_in_the_error_body(
    staff_client: Client, installation: Installation, settings: Any
) -> None:
    body = b'{"resource": "orders", "mode": "snapshot", "pad": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    assert len(body) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE

    response = post(staff_client, body)

    assert_error(response, 413, "too_large")
    assert SyncJob.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"resource=orders&mode=snapshot", "application/x-www-form-urlencoded"),
        (
            b"--x\r\nContent-Disposition: form-data; name=resource\r\n\r\norders\r\n--x--",
            "multipart/form-data; boundary=x",
        ),
    ],
    ids=["form", "multipart"],
)
def test_the_api_takes_json_only(
    staff_client: Client, installation: Installation, body: bytes, content_type: str
) -> None:
    response = post(staff_client, body, content_type)

    assert_error(response, 415, "unsupported_media_type")
    assert SyncJob.objects.count() == 0
