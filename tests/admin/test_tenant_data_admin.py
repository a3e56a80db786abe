"""The installation admin's data life cycle: when data is purged, purge now (confirmed, audited), export."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.models import CHANGE
from django.test import Client
from django.utils import timezone

from installations import services
from installations.models import Installation
from sync import refresh as sync_refresh
from sync.documents import resource_named
from sync.models import Order
from tests.admin.test_installations import audit_log, change_page, run_action

pytestmark = pytest.mark.django_db


def mirror_one_order(installation: Installation) -> None:
    sync_refresh.upsert_document(
        installation=installation,
        resource=resource_named("orders"),
        document={"code": f"O-{installation.eshop_id}", "changeTime": "2026-01-01T00:00:00+0100", "items": []},
    )


def test_purge_now_asks_first_then_purges_only_ended_tenants_and_audits(
    admin_client: Client, tenants: tuple[Installation, Installation], settings: Any
) -> None:
    settings.TENANT_DATA_RETENTION = timedelta(days=30)
    ended, active = tenants
    for installation in tenants:
        mirror_one_order(installation)
    services.uninstall(installation=ended, cause="test")

    confirmation = run_action(admin_client, "purge_data", ended, active).content.decode()
    assert "Yes, purge the data" in confirmation
    assert Order.objects.filter(installation=ended).exists()

    run_action(admin_client, "purge_data", ended, active, apply="1")

    assert not Order.objects.filter(installation=ended).exists()
    assert Order.objects.filter(installation=active).exists()
    [(user, flag, message)] = audit_log(ended)
    assert (user, flag) == ("admin", CHANGE) and message.startswith("Purged the e-shop's data now (")
    assert audit_log(active) == []


def test_the_change_page_says_when_the_data_is_purged(
    admin_client: Client, tenants: tuple[Installation, Installation], settings: Any
) -> None:
    settings.TENANT_DATA_RETENTION = timedelta(days=30)
    ended, _ = tenants
    services.uninstall(installation=ended, cause="test")
    uninstalled_at = Installation.objects.get(pk=ended.pk).uninstalled_at
    assert uninstalled_at is not None
    due = timezone.localtime(uninstalled_at + timedelta(days=30))

    page = admin_client.get(change_page(ended)).content.decode()

    assert f"on {due:%Y-%m-%d %H:%M}" in page


def test_the_export_action_streams_that_eshops_data_and_audits(
    admin_client: Client, tenants: tuple[Installation, Installation]
) -> None:
    mine, theirs = tenants
    for installation in tenants:
        mirror_one_order(installation)

    response = run_action(admin_client, "export_data", mine)

    lines = [json.loads(line) for line in gzip.decompress(response.getvalue()).splitlines()]
    exported = sorted(line["code"] for line in lines if line["type"] == "order")
    assert exported == sorted(Order.objects.filter(installation=mine).values_list("code", flat=True))
    assert f"O-{theirs.eshop_id}" not in exported
    assert audit_log(mine) == [("admin", CHANGE, "Exported the e-shop's data.")]
    assert audit_log(theirs) == []
