"""GET /healthz for load balancers."""

from __future__ import annotations

import pytest
from django.test import Client

from config.celery import app as celery_app

pytestmark = pytest.mark.django_db


def test_ready_when_database_and_broker_answer(client: Client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"database": "ok", "broker": "ok"}


def test_unready_when_the_broker_is_down(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(celery_app.conf, "broker_url", "redis://127.0.0.1:9/0")

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json() == {"database": "ok", "broker": "unavailable"}


def test_only_get(client: Client) -> None:
    assert client.post("/healthz").status_code == 405
