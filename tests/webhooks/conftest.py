"""Fixtures for webhook tests: onboarded e-shops, Shoptet-shaped signed bodies, a scratch handler registry."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import connections
from django.test import Client

from installations import services as installation_services
from installations.models import Installation
from tests.fakes.shoptet import FakeShoptet
from tests.fakes.shoptet.webhooks import encode
from webhooks import intake, outbox, processing, rejections, signature
from webhooks.models import WebhookDelivery
from webhooks.registry import WebhookEvent, handles, registry

ENDPOINT = "/shoptet/webhooks/"
PRAGUE = ZoneInfo("Europe/Prague")


def shoptet_time(moment: datetime | None = None) -> str:
    """eventCreated as Shoptet writes it: local time, offset without a colon."""
    return (moment or datetime.now(PRAGUE)).astimezone(PRAGUE).strftime("%Y-%m-%dT%H:%M:%S%z")


def body_for(
    eshop_id: int, event: str, instance: str | int, *, created: datetime | None = None, ago: timedelta | None = None
) -> bytes:
    """A notification body serialised like Shoptet's PHP (compact, `/` escaped)."""
    moment = created or datetime.now(PRAGUE) - (ago or timedelta(0))
    return encode(
        {"eshopId": eshop_id, "event": event, "eventCreated": shoptet_time(moment), "eventInstance": instance}
    )


def post(client: Client, body: bytes, sig: str | None = None, **headers: str) -> Any:
    if sig is not None:
        headers[signature.HEADER] = sig
    return client.post(ENDPOINT, data=body, content_type="application/json", headers=headers)


def post_signed(client: Client, installation: Installation, event: str, instance: str | int, **options: Any) -> Any:
    body = body_for(installation.eshop_id, event, instance, **options)
    return post(client, body, signature.sign(body, installation.webhook_signature_key))


def onboard(installation: Installation) -> Installation:
    installation_services.onboard(installation=installation)
    return Installation.objects.get(pk=installation.pk)


@pytest.fixture
def onboarded(installation: Installation) -> Installation:
    """The e-shop with its signature key and registrations, as after the onboarding task."""
    return onboard(installation)


@pytest.fixture
def other_onboarded(other_installation: Installation) -> Installation:
    return onboard(other_installation)


@pytest.fixture(autouse=True)
def fresh_signers() -> Iterator[None]:
    """Each test starts with no e-shop keys kept by the endpoint."""
    intake.forget_signers()
    yield
    intake.forget_signers()


@pytest.fixture(autouse=True)
def rejection_limit_uses_the_cache() -> Iterator[None]:
    """A test that took the cache down must not leave the next one without the rejection limit."""
    rejections.resume_cache()
    yield
    rejections.resume_cache()


@pytest.fixture(autouse=True)
def scratch_registry() -> Iterator[None]:
    """Only the webhooks app's own handlers (and those a test registers, until it ends).

    Other apps' handlers (sync's) are tested with those apps; here they would only add their own work.
    """
    saved = list(registry.registrations)
    registry.registrations = [r for r in saved if r.handler.__module__.startswith("webhooks.")]
    yield
    registry.registrations = saved


@dataclass
class Recorder:
    """A handler that remembers every call, optionally doing something first."""

    calls: list[WebhookEvent] = field(default_factory=list)
    action: Callable[[WebhookEvent], None] | None = None

    def __call__(self, event: WebhookEvent) -> None:
        if self.action is not None:
            self.action(event)
        self.calls.append(event)


@pytest.fixture
def record(scratch_registry: None) -> Callable[..., Recorder]:
    """record("order:*") → a Recorder registered as a handler for those events."""

    def make(*events: str, action: Callable[[WebhookEvent], None] | None = None) -> Recorder:
        recorder = Recorder(action=action)

        def recording_handler(event: WebhookEvent) -> None:
            recorder(event)

        recording_handler.__qualname__ = f"recording_handler_{id(recorder)}"
        handles(*events)(recording_handler)
        return recorder

    return make


def deliveries(installation: Installation | None = None) -> list[WebhookDelivery]:
    queryset = WebhookDelivery.objects.order_by("pk")
    return list(queryset.filter(installation=installation) if installation else queryset)


def fake_requests(fake: FakeShoptet) -> int:
    return fake.request_count(None, r".*")


def in_thread(function: Callable[..., Any], **kwargs: Any) -> threading.Thread:
    """Run `function` in a started thread with its own database connection, closed when it ends."""

    def run() -> None:
        try:
            function(**kwargs)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.fixture
def live_platform(live_server: Any, fake_shoptet: FakeShoptet, settings: Any) -> str:
    """The platform served on loopback, so the fake Shoptet delivers webhooks to it for real."""
    settings.PUBLIC_URL = live_server.url
    url = f"{live_server.url}{ENDPOINT}"
    fake_shoptet.set_system_webhook_url(url)
    return url


def process_all() -> Any:
    """Run what the relay would enqueue, as a worker would, until nothing is due."""

    total = processing.Outcome()
    while True:
        leaders = outbox.claim_due_deliveries()
        if not leaders:
            return total
        for delivery_id in leaders:
            outcome = processing.process_delivery(delivery_id=delivery_id)
            for name in ("processed", "duplicates", "retrying", "failed", "rejected", "ignored"):
                getattr(total, name).extend(getattr(outcome, name))
            total.handler_calls += outcome.handler_calls
