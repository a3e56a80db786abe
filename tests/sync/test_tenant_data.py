"""An ended tenant's data: deleted in batches after TENANT_DATA_RETENTION, kept by a reinstall, exported."""

from __future__ import annotations

import gzip
import json
import logging
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from addon import services as addon_services
from addon.auth import Admin
from installations import retention
from installations import services as installation_services
from installations import tasks as installation_tasks
from installations.models import Installation
from sync.models import Invoice, InvoiceItem, Order, OrderItem, SyncJob
from tests.conftest import install_via_fake
from tests.fakes.shoptet import FakeShoptet
from tests.sync.conftest import import_snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_mirrored_shops(mirrored_shop: Installation, other_onboarded: Installation, jobs_on_demand: FakeShoptet):  # type: ignore[no-untyped-def]
    import_snapshot(jobs_on_demand, other_onboarded, "orders")
    import_snapshot(jobs_on_demand, other_onboarded, "invoices")
    return mirrored_shop, other_onboarded


def stored_rows(installation: Installation) -> dict[str, int]:
    return {
        "orders": Order.objects.filter(installation=installation).count(),
        "order items": OrderItem.objects.filter(installation=installation).count(),
        "invoices": Invoice.objects.filter(installation=installation).count(),
        "invoice items": InvoiceItem.objects.filter(installation=installation).count(),
        "sync jobs": SyncJob.objects.filter(installation=installation).count(),
    }


def uninstalled_days_ago(installation: Installation, days: int) -> None:
    installation_services.uninstall(installation=installation, cause="test")
    Installation.objects.filter(pk=installation.pk).update(uninstalled_at=timezone.now() - timedelta(days=days))


def test_data_older_than_the_period_goes_in_bounded_batches_and_other_tenants_stay(
    two_mirrored_shops: tuple[Installation, Installation], settings: Any
) -> None:
    ended, other = two_mirrored_shops
    settings.TENANT_DATA_RETENTION = timedelta(days=30)
    settings.TENANT_DATA_PURGE_BATCH = 2
    before = stored_rows(ended)
    other_before = stored_rows(other)
    assert before["orders"] == 5 and before["order items"] > 2
    uninstalled_days_ago(ended, 31)

    with CaptureQueriesContext(connection) as queries:
        retention.purge_due()

    assert all(count == 0 for count in stored_rows(ended).values())
    assert stored_rows(other) == other_before
    order_deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('DELETE FROM "sync_order"')]
    # Five orders in batches of two: three statements, none of them one DELETE of everything.
    assert len(order_deletes) == math.ceil(before["orders"] / 2)
    # The row keeps its identity and history, not its secrets.
    row = Installation.objects.get(pk=ended.pk)
    assert row.eshop_id == ended.eshop_id and row.status_changes.exists()
    assert (row.oauth_token, row.webhook_signature_key, row.previous_webhook_signature_key) == ("", "", "")
    assert Installation.objects.get(pk=other.pk).oauth_token != ""


def test_data_within_the_period_or_kept_for_ever_stays(
    two_mirrored_shops: tuple[Installation, Installation], settings: Any
) -> None:
    ended, _ = two_mirrored_shops
    before = stored_rows(ended)
    uninstalled_days_ago(ended, 29)
    settings.TENANT_DATA_RETENTION = timedelta(days=30)
    retention.purge_due()
    settings.TENANT_DATA_RETENTION = None  # TENANT_DATA_RETENTION=0
    Installation.objects.filter(pk=ended.pk).update(uninstalled_at=timezone.now() - timedelta(days=400))
    retention.purge_due()

    assert stored_rows(ended) == before
    assert Installation.objects.get(pk=ended.pk).oauth_token != ""


def test_reinstall_within_the_period_keeps_the_data_and_imports_nothing_again(
    two_mirrored_shops: tuple[Installation, Installation],
    fake_shoptet: FakeShoptet,
    settings: Any,
    eager_tasks: None,
    django_capture_on_commit_callbacks,  # type: ignore[no-untyped-def]
) -> None:
    ended, _ = two_mirrored_shops
    settings.TENANT_DATA_RETENTION = timedelta(days=30)
    before = stored_rows(ended)
    uninstalled_days_ago(ended, 10)

    reinstalled = install_via_fake(fake_shoptet, ended.eshop_id)
    with django_capture_on_commit_callbacks(execute=True):
        installation_tasks.onboard.delay(reinstalled.pk)
    # Once active again, the period no longer runs.
    Installation.objects.filter(pk=ended.pk).update(installed_at=timezone.now() - timedelta(days=60))
    retention.purge_due()

    assert reinstalled.pk == ended.pk
    assert stored_rows(ended) == before
    # No new snapshot: the kept mirror is only brought up to date by the changes runs.
    assert SyncJob.objects.filter(installation=ended, mode="snapshot").count() == 2


def read_export(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def test_the_export_file_holds_exactly_that_eshops_documents(
    two_mirrored_shops: tuple[Installation, Installation], tmp_path: Path
) -> None:
    exported, other = two_mirrored_shops
    output = tmp_path / "export.jsonl.gz"

    call_command("export_eshop_data", str(exported.eshop_id), "--output", str(output))

    lines = read_export(output)
    orders = {line["code"]: line for line in lines if line["type"] == "order"}
    invoices = {line["code"]: line for line in lines if line["type"] == "invoice"}
    assert set(orders) == set(Order.objects.filter(installation=exported).values_list("code", flat=True))
    assert set(invoices) == set(Invoice.objects.filter(installation=exported).values_list("code", flat=True))
    for order in Order.objects.filter(installation=exported):
        assert orders[order.code]["data"] == order.data
        assert [item["position"] for item in orders[order.code]["items"]] == list(
            order.items.order_by("position").values_list("position", flat=True)
        )
    other_documents = [o.data for o in Order.objects.filter(installation=other)]
    other_documents += [i.data for i in Invoice.objects.filter(installation=other)]
    assert other_documents
    assert not [line for line in lines if line.get("data") in other_documents]
    assert len(lines) == len(orders) + len(invoices) + exported.settings_changes.count()


def test_the_export_command_refuses_an_unknown_eshop(db: None, tmp_path: Path) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No installation"):
        call_command("export_eshop_data", "999999999", "--output", str(tmp_path / "x.gz"))


def test_settings_changes_and_resyncs_log_no_admin_email(
    mirrored_shop: Installation, caplog: pytest.LogCaptureFixture
) -> None:
    admin = Admin(
        eshop_id=mirrored_shop.eshop_id,
        installation_id=mirrored_shop.pk,
        email="jana.novakova@example.cz",
        name="Jana Nováková",
        language="cs",
        session_id="s",
        logged_in_at=0,
    )
    with caplog.at_level(logging.DEBUG):
        addon_services.update_settings(installation=mirrored_shop, admin=admin, values={"sync_invoices": False})
        addon_services.start_resync(installation=mirrored_shop, admin=admin, resource="orders", mode="changes")

    assert "addon settings changed" in caplog.text and "resync requested" in caplog.text
    assert admin.email not in caplog.text and admin.name not in caplog.text
