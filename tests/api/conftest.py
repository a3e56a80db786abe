"""Two onboarded tenants with mirrored orders and invoices, sync jobs and webhook deliveries each."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from rest_framework.authtoken.models import Token

from installations import services as installation_services
from installations.models import Installation
from sync import refresh as sync_refresh
from sync.documents import resource_named
from sync.models import SyncJob
from tests.conftest import grant_platform_permissions
from tests.fakes.shoptet import FakeShoptet
from webhooks.models import WebhookDelivery

# Both e-shops have an order with this code, with different content.
SLASHED = "2026/000777"


def mirror(fake: FakeShoptet, installation: Installation) -> None:
    """Store every order and invoice of the fake e-shop as the sync would."""
    eshop = fake.eshops[installation.eshop_id]
    for code in eshop.orders:
        document = fake.order_detail(installation.eshop_id, code, ("notes", "shippingDetails"))
        sync_refresh.upsert_document(installation=installation, resource=resource_named("orders"), document=document)
    for code in eshop.invoices:
        document = fake.invoice_detail(installation.eshop_id, code)
        sync_refresh.upsert_document(installation=installation, resource=resource_named("invoices"), document=document)


def add_jobs(installation: Installation) -> list[SyncJob]:
    """A completed and a failed snapshot of orders, a running change read of invoices; newest last."""
    finished = timezone.now() - timedelta(hours=1)
    return [
        SyncJob.objects.create(
            installation=installation,
            resource="orders",
            mode="snapshot",
            status="completed",
            finished_at=finished,
            imported=6,
        ),
        SyncJob.objects.create(
            installation=installation,
            resource="orders",
            mode="snapshot",
            status="failed",
            finished_at=finished,
            error="the result file was truncated",
        ),
        SyncJob.objects.create(installation=installation, resource="invoices", mode="changes", status="running"),
    ]


def add_deliveries(installation: Installation) -> list[WebhookDelivery]:
    """Three deliveries, newest first: a processed order:update, a failed invoice:create, a rejected one."""
    now = timezone.now()
    rows = [
        ("order:update", SLASHED, "processed", True, ""),
        ("invoice:create", "INV-1", "failed", True, "Shoptet answered 503"),
        ("order:update", SLASHED, "rejected", False, "bad signature"),
    ]
    return [
        WebhookDelivery.objects.create(
            installation=installation,
            eshop_id=installation.eshop_id,
            event=event,
            event_instance=instance,
            event_created=now - timedelta(minutes=index),
            received_at=now - timedelta(minutes=index),
            signature_valid=signed,
            status=status,
            attempts=1,
            error=error,
        )
        for index, (event, instance, status, signed, error) in enumerate(rows)
    ]


@pytest.fixture
def tenants(
    installation: Installation, other_installation: Installation, fake_shoptet: FakeShoptet
) -> tuple[Installation, Installation]:
    """Both e-shops onboarded, mirrored, with jobs and deliveries."""
    for tenant in (installation, other_installation):
        installation_services.onboard(installation=tenant)
        fake_shoptet.create_order(tenant.eshop_id, code=SLASHED, webhook=False)
        mirror(fake_shoptet, tenant)
        add_jobs(tenant)
        add_deliveries(tenant)
    return (
        Installation.objects.get(pk=installation.pk),
        Installation.objects.get(pk=other_installation.pk),
    )


@pytest.fixture
def wsgi_app() -> Iterator[WSGIHandler]:
    """The project's WSGI application, in this process, inside the test's transaction.

    Django's own test client does the same: a request must not close the connection the test's
    transaction lives on.
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield WSGIHandler()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def staff_token(django_user_model) -> str:  # type: ignore[no-untyped-def]
    user = django_user_model.objects.create_user("schema-staff", password="unused-password-9", is_staff=True)
    grant_platform_permissions(user)
    key: str = Token.objects.create(user=user).key
    return key


@pytest.fixture
def api_schema(wsgi_app: WSGIHandler, staff_token: str, tenants: tuple[Installation, Installation]) -> Any:
    return schemathesis.openapi.from_wsgi(
        "/api/v1/schema/", wsgi_app, headers={"Authorization": f"Token {staff_token}"}
    )
