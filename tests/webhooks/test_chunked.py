"""A body sent chunked (no Content-Length) is read up to the cap like any other, in gunicorn and in the view.

Django limits a request's stream to its Content-Length, so without one it reads nothing; gunicorn decodes
the chunks and ends the stream with the body. The gunicorn tests run the production web command.
"""

from __future__ import annotations

import http.client
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client

from installations.models import Installation
from tests.deployment.commands import WEB
from tests.webhooks.conftest import ENDPOINT, body_for, deliveries
from tests.webhooks.test_outbox import free_port
from webhooks import signature

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0


def post_chunked(client: Client, body: bytes, sig: str) -> Any:
    """As gunicorn hands a chunked request to Django: no CONTENT_LENGTH, a stream that ends with the body."""
    environ: dict[str, Any] = {"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True}
    return client.generic(
        "POST",
        ENDPOINT,
        headers={signature.HEADER: sig, "Transfer-Encoding": "chunked"},
        CONTENT_TYPE="application/json",
        **environ,
    )


@pytest.mark.django_db
def test_a_signed_chunked_body_is_read_in_the_view(client: Client, onboarded: Installation) -> None:
    body = body_for(onboarded.eshop_id, "order:update", "X1")

    response = post_chunked(client, body, signature.sign(body, onboarded.webhook_signature_key))

    assert response.status_code == 200
    [delivery] = deliveries()
    assert (delivery.status, bytes(delivery.body)) == ("received", body)


@pytest.mark.django_db
def test_a_chunked_body_over_the_cap_is_413_in_the_view(client: Client, onboarded: Installation, settings) -> None:
    settings.WEBHOOK_MAX_BODY_BYTES = 300
    body = body_for(onboarded.eshop_id, "order:update", "X" * 300)

    response = post_chunked(client, body, signature.sign(body, onboarded.webhook_signature_key))

    assert response.status_code == 413
    [delivery] = deliveries()
    assert (delivery.status, bytes(delivery.body)) == ("rejected", b"")


def database_url() -> str:
    db = django_settings.DATABASES["default"]
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture
def gunicorn(transactional_db: None, tmp_path: Path) -> Iterator[int]:
    """The production web command on a free port, against the test database; yields the port."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log = (tmp_path / "gunicorn.log").open("wb")
    process = subprocess.Popen(WEB, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, process)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("gunicorn exited at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.1)
        else:
            return
    raise RuntimeError("gunicorn did not start listening")


def send_chunked(port: int, body: bytes, sig: str, *, chunk: int = 1000) -> tuple[int, bytes]:
    """POST the body with chunked framing (http.client frames an iterable body that has no length)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        pieces = (body[start : start + chunk] for start in range(0, len(body), chunk))
        connection.request(
            "POST",
            ENDPOINT,
            body=pieces,
            headers={"Content-Type": "application/json", signature.HEADER: sig},
            encode_chunked=True,
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_gunicorn_reads_a_signed_chunked_webhook(gunicorn: int, onboarded: Installation) -> None:
    body = body_for(onboarded.eshop_id, "order:update", "X1")

    status, _ = send_chunked(gunicorn, body, signature.sign(body, onboarded.webhook_signature_key), chunk=17)

    assert status == 200
    [delivery] = deliveries()
    assert (delivery.status, delivery.signature_valid, bytes(delivery.body)) == ("received", True, body)


def test_gunicorn_answers_413_to_a_chunked_body_over_the_cap(gunicorn: int, onboarded: Installation) -> None:
    body = body_for(onboarded.eshop_id, "order:update", "X" * django_settings.WEBHOOK_MAX_BODY_BYTES)

    status, answer = send_chunked(gunicorn, body, signature.sign(body, onboarded.webhook_signature_key))

    assert status == 413
    [delivery] = deliveries()
    assert (delivery.status, bytes(delivery.body)) == ("rejected", b"")
    assert b"larger than" in answer
