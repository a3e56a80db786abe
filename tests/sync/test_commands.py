"""The people's tools: `shoptet_sync` and `import_snapshot`, with their progress bar on a terminal."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from installations.models import Installation
from sync.models import Invoice, Order, SyncJob
from tests.fakes.shoptet import FakeShoptet
from tests.sync.conftest import import_snapshot, local_state, mirrored, shoptet_documents

pytestmark = pytest.mark.django_db


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_shoptet_sync_runs_a_snapshot_to_the_end(onboarded: Installation, fake_shoptet: FakeShoptet) -> None:
    fake_shoptet.job_duration = 0.2
    out = Terminal()

    call_command("shoptet_sync", str(onboarded.eshop_id), "orders", "--mode", "snapshot", stdout=out)

    job = SyncJob.objects.get(installation=onboarded)
    assert (job.mode, job.status, job.cause, job.imported) == ("snapshot", "completed", "manage.py shoptet_sync", 5)
    assert mirrored(onboarded, "orders") == shoptet_documents(fake_shoptet, onboarded, "orders")
    output = out.getvalue()
    assert "\rorders: " in output
    assert "100%" in output
    assert output.endswith(f"{job} completed: 5 read, 5 imported, 0 skipped, 0 marked deleted.\n")


def test_shoptet_sync_reads_changes(onboarded: Installation, jobs_on_demand: FakeShoptet) -> None:
    import_snapshot(jobs_on_demand, onboarded, "invoices")
    jobs_on_demand.advance_time(60)
    jobs_on_demand.create_invoice(onboarded.eshop_id, webhook=False)
    out = io.StringIO()

    call_command("shoptet_sync", str(onboarded.eshop_id), "invoices", "--mode", "changes", stdout=out)

    job = SyncJob.objects.get(installation=onboarded, mode="changes")
    assert out.getvalue() == f"{job} completed: 1 read, 1 imported, 0 skipped, 0 marked deleted.\n"
    assert mirrored(onboarded, "invoices") == shoptet_documents(jobs_on_demand, onboarded, "invoices")


def test_shoptet_sync_refuses_what_cannot_run(onboarded: Installation, jobs_on_demand: FakeShoptet) -> None:
    with pytest.raises(CommandError, match="No installation has e-shop id 42"):
        call_command("shoptet_sync", "42", "orders")
    call_command("shoptet_sync", str(onboarded.eshop_id), "orders", "--mode", "changes", stdout=io.StringIO())
    running = SyncJob.objects.create(installation=onboarded, resource="orders", mode="snapshot", status="running")
    with pytest.raises(CommandError, match=rf"Snapshot of orders #{running.pk} is already running"):
        call_command("shoptet_sync", str(onboarded.eshop_id), "orders")


def test_shoptet_sync_reports_a_failed_job(onboarded: Installation, fake_shoptet: FakeShoptet) -> None:
    fake_shoptet.job_duration = 0.2
    fake_shoptet.fail_next_job(onboarded.eshop_id)

    with pytest.raises(CommandError, match=r"failed: Shoptet's job \w+ ended failed: Job processing failed"):
        call_command("shoptet_sync", str(onboarded.eshop_id), "orders", stdout=io.StringIO())

    assert not Order.objects.exists()


def write_lines(path: Path, documents: list[dict]) -> Path:
    with gzip.open(path, "wb") as out:
        for document in documents:
            out.write(json.dumps(document, ensure_ascii=False).encode() + b"\n")
    return path


def test_import_snapshot_imports_a_saved_file(
    tmp_path: Path, onboarded: Installation, other_onboarded: Installation, fake_shoptet: FakeShoptet
) -> None:
    documents = shoptet_documents(fake_shoptet, onboarded, "invoices")
    first = sorted(documents)[0]
    older = dict(documents[first], changeTime="2020-01-01T00:00:00+0100", isValid=not documents[first]["isValid"])
    # A code twice in one file: the newest line counts, whatever the order.
    path = write_lines(tmp_path / "invoices.json.gz", [documents[first], *documents.values(), older])
    other_before = local_state(other_onboarded)
    out = Terminal()

    call_command("import_snapshot", str(path), "--eshop", str(onboarded.eshop_id), "--resource", "invoices", stdout=out)

    assert mirrored(onboarded, "invoices") == documents
    assert out.getvalue().endswith("5 invoices read: 3 imported, 2 skipped (ours were as new or newer).\n")
    assert "\rinvoices from invoices.json.gz: " in out.getvalue()
    assert local_state(other_onboarded) == other_before
    assert not SyncJob.objects.exists()


def test_import_snapshot_changes_nothing_for_a_bad_file(tmp_path: Path, onboarded: Installation) -> None:
    good = {"code": "2026000001", "changeTime": "2026-01-01T10:00:00+0100", "items": []}
    path = tmp_path / "broken.json.gz"
    path.write_bytes(gzip.compress(json.dumps(good).encode() + b"\n")[:-12])

    with pytest.raises(CommandError, match=r"Nothing imported: the result file is truncated"):
        call_command("import_snapshot", str(path), "--eshop", str(onboarded.eshop_id), "--resource", "orders")

    assert not Order.objects.exists()
    with pytest.raises(CommandError, match="is not a file"):
        call_command(
            "import_snapshot", str(tmp_path / "missing.gz"), "--eshop", str(onboarded.eshop_id), "--resource", "orders"
        )
    with pytest.raises(CommandError, match="No installation has e-shop id 7"):
        call_command("import_snapshot", str(path), "--eshop", "7", "--resource", "orders")
    assert not Invoice.objects.exists()
