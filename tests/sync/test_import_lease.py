"""The lease of a running import: one run at a time, and a killed worker's import taken up again within 60 s."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection, connections

from config.celery import app as celery_app
from installations import services as installation_services
from sync import snapshots
from sync.models import Order, OrderItem, SyncJob
from tests.conftest import install_via_fake
from tests.fakes.shoptet import FakeShoptet
from tests.sync.conftest import finished_snapshot, mirrored, shoptet_documents
from tests.sync.test_killed_import import PROJECT_ROOT, worker_environment, worker_is_copying

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs the PostgreSQL of `make test`"),
]

KILLED_IMPORT_ORDERS = 3000
TAKEN_UP_WITHIN = 60.0


def test_two_runs_of_one_job_at_once_import_it_once(fake_shoptet: FakeShoptet) -> None:
    """A redelivered task, a poll and the relay may start one job together: the run that finds a live lease
    leaves at once, without asking Shoptet anything, and the job is imported once."""
    fake_shoptet.never_finish_jobs = True
    shop = install_via_fake(fake_shoptet, 700011, orders=300, invoices=0)
    installation_services.onboard(installation=shop)
    job = finished_snapshot(fake_shoptet, shop, "orders")
    # The download waits, so that the first run holds the job while the second one starts.
    fake_shoptet.add_fault("GET", r"/api-results/", 0, delay=2.0)
    outcome: dict[str, SyncJob] = {}

    def first_run() -> None:
        try:
            outcome["first"] = snapshots.import_snapshot(job=SyncJob.objects.get(pk=job.pk))
        finally:
            connections.close_all()

    first = threading.Thread(target=first_run)
    first.start()
    deadline = time.monotonic() + 30
    while fake_shoptet.request_count("GET", r"/api-results/") == 0:
        assert time.monotonic() < deadline, "the first run never started the download"
        time.sleep(0.01)
    details_before = fake_shoptet.request_count("GET", r"/api/system/jobs/")

    second = snapshots.import_snapshot(job=SyncJob.objects.get(pk=job.pk))

    assert second.status == "importing"
    assert fake_shoptet.request_count("GET", r"/api/system/jobs/") == details_before
    first.join(timeout=60)
    job.refresh_from_db()
    assert (job.status, job.received, job.imported) == ("completed", 300, 300)
    assert outcome["first"].status == "completed"
    assert fake_shoptet.request_count("GET", r"/api-results/") == 1
    assert Order.objects.filter(installation=shop).count() == 300
    assert mirrored(shop, "orders") == shoptet_documents(fake_shoptet, shop, "orders")


def _start_worker(tmp_path: Path, name: str, *, with_beat: bool) -> subprocess.Popen[bytes]:
    """A Celery worker of the imports queue, as compose runs it, leading a process group of its own."""
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "info", "--concurrency", "1"]
    command += ["--prefetch-multiplier", "1", "-n", f"{name}@%h"]
    if with_beat:  # beat's relay is what hands the dead worker's job on; its relays run on `default`
        command += ["-Q", "imports,default", "-B", "--schedule", str(tmp_path / "celerybeat-schedule")]
    else:
        command += ["-Q", "imports"]
    with open(tmp_path / f"{name}.log", "wb") as log:  # the worker keeps its own copy of the descriptor
        return subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=worker_environment(), stdout=log, stderr=log, start_new_session=True
        )


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)


def test_a_killed_worker_s_import_is_taken_up_again_within_a_minute(fake_shoptet: FakeShoptet, tmp_path: Path) -> None:
    fake_shoptet.never_finish_jobs = True
    shop = install_via_fake(fake_shoptet, 700012, orders=KILLED_IMPORT_ORDERS, invoices=0)
    installation_services.onboard(installation=shop)
    job = finished_snapshot(fake_shoptet, shop, "orders")

    first = _start_worker(tmp_path, "imports-first", with_beat=False)
    second: subprocess.Popen[bytes] | None = None
    try:
        celery_app.send_task("sync.tasks.import_snapshot", args=[job.pk], queue="imports")
        deadline = time.monotonic() + 60
        while not worker_is_copying():
            assert first.poll() is None, (tmp_path / "imports-first.log").read_text()
            assert time.monotonic() < deadline, "the worker never started copying"
            time.sleep(0.005)
        # The main process and its pool at once, as an OOM kill or a container stop does.
        os.killpg(first.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        first.wait(timeout=30)
        job.refresh_from_db()
        assert job.status == "importing"

        second = _start_worker(tmp_path, "imports-second", with_beat=True)
        while not SyncJob.objects.filter(pk=job.pk, status__in=["completed", "failed"]).exists():
            assert second.poll() is None, (tmp_path / "imports-second.log").read_text()
            assert time.monotonic() - killed_at < TAKEN_UP_WITHIN, (
                f"the job is still {SyncJob.objects.get(pk=job.pk).status} {TAKEN_UP_WITHIN:.0f} s after the kill"
            )
            time.sleep(0.2)
        took = time.monotonic() - killed_at
    finally:
        _stop(first)
        if second is not None:
            _stop(second)
    print(f"\nthe killed worker's import completed {took:.1f} s after the kill")

    job.refresh_from_db()
    orders = fake_shoptet.eshops[shop.eshop_id].orders
    assert (job.status, job.received, job.imported, job.skipped) == (
        "completed",
        KILLED_IMPORT_ORDERS,
        KILLED_IMPORT_ORDERS,
        0,
    )
    assert Order.objects.filter(installation=shop).count() == KILLED_IMPORT_ORDERS
    assert OrderItem.objects.filter(installation=shop).count() == sum(len(o["items"]) for o in orders.values())
    assert mirrored(shop, "orders") == shoptet_documents(fake_shoptet, shop, "orders")
