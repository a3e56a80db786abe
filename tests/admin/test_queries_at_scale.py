"""A thousand e-shops cost every list page the queries two cost: no admin list, REST list or /metrics does
work per e-shop or per row."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from installations.models import AddonSettings, Installation, InstallAttempt, SettingsChange
from notifications.models import Notification
from sync.models import Invoice, Order, SyncJob
from tests.admin.test_queries import INSTALLATION_FILTERED_LISTS, changelists
from webhooks.models import RegistrationDrift, WebhookDelivery

pytestmark = pytest.mark.django_db

MANY = 1_000


def add_tenants(count: int, user: Any) -> list[Installation]:
    """`count` more e-shops with a row in every list that filters or shows installations."""
    now = timezone.now()
    first = 600_000
    tenants = Installation.objects.bulk_create(
        Installation(
            eshop_id=first + number,
            name=f"E-shop {number}",
            status=Installation.Status.ACTIVE if number % 3 else Installation.Status.UNINSTALLED,
            onboarding_status=Installation.Onboarding.DONE,
        )
        for number in range(count)
    )
    AddonSettings.objects.bulk_create(
        AddonSettings(installation=tenant, notification_email=f"ops{tenant.eshop_id}@example.com") for tenant in tenants
    )
    SettingsChange.objects.bulk_create(SettingsChange(installation=tenant, field="sync_orders") for tenant in tenants)
    InstallAttempt.objects.bulk_create(
        InstallAttempt(installation=tenant, eshop_id=tenant.eshop_id, outcome="installed") for tenant in tenants
    )
    RegistrationDrift.objects.bulk_create(
        RegistrationDrift(installation=tenant, missing=["order:create"]) for tenant in tenants
    )
    Order.objects.bulk_create(
        Order(installation=tenant, code=f"O{tenant.eshop_id}", creation_time=now, data={}, synced_at=now)
        for tenant in tenants
    )
    Invoice.objects.bulk_create(
        Invoice(installation=tenant, code=f"F{tenant.eshop_id}", creation_time=now, data={}, synced_at=now)
        for tenant in tenants
    )
    SyncJob.objects.bulk_create(
        SyncJob(installation=tenant, resource="orders", mode="snapshot", status="completed", finished_at=now)
        for tenant in tenants
    )
    WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            installation=tenant,
            eshop_id=tenant.eshop_id,
            event="order:update",
            event_instance=f"O{tenant.eshop_id}",
            status=WebhookDelivery.Status.FAILED,
            received_at=now - timedelta(minutes=5),
        )
        for tenant in tenants
    )
    Notification.objects.bulk_create(
        Notification(installation=tenant, kind="sync_failed", day=now.date(), recipient="ops@example.com")
        for tenant in tenants
    )
    LogEntry.objects.log_actions(user_id=user.pk, queryset=tenants, action_flag=CHANGE, change_message="x")
    return tenants


def query_counts(client: Client, urls: list[str], **headers: str) -> dict[str, int]:
    counts = {}
    for url in urls:
        client.get(url, headers=headers)  # warm the session and content type caches
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url, headers=headers)
        assert response.status_code == 200, (url, response.status_code)
        counts[url] = len(queries.captured_queries)
    return counts


def rest_lists(some: Installation) -> list[str]:
    eshop = f"/api/v1/installations/{some.eshop_id}"
    return [
        "/api/v1/installations/",
        "/api/v1/webhook-deliveries/",
        f"/api/v1/webhook-deliveries/?eshop_id={some.eshop_id}",
        f"{eshop}/orders/",
        f"{eshop}/invoices/",
        f"{eshop}/jobs/",
        "/metrics",
    ]


def test_admin_lists_take_the_same_queries_for_two_e_shops_and_for_a_thousand(
    admin_client: Client, admin_user: Any, tenants: tuple[Installation, Installation]
) -> None:
    urls = changelists() + [f"{url}?eshop={tenants[0].eshop_id}" for url in INSTALLATION_FILTERED_LISTS]
    two = query_counts(admin_client, urls)

    add_tenants(MANY - len(tenants), admin_user)
    thousand = query_counts(admin_client, urls)

    assert Installation.objects.count() == MANY
    assert thousand == two


def test_rest_lists_and_metrics_take_the_same_queries_for_two_e_shops_and_for_a_thousand(
    client: Client, admin_user: Any, staff_token: str, tenants: tuple[Installation, Installation]
) -> None:
    token = {"Authorization": f"Token {staff_token}"}
    two = query_counts(client, rest_lists(tenants[0]), **token)

    add_tenants(MANY - len(tenants), admin_user)
    thousand = query_counts(client, rest_lists(tenants[0]), **token)

    assert thousand == two
