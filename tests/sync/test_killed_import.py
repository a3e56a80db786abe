"""A worker killed in the middle of an import: nothing half-imported, and the redelivered task ends correct."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, connections, transaction
from django.utils import timezone

from installations import services as installation_services
from sync import jobs, leases, snapshots
from sync.models import Order, OrderItem, SyncCursor, SyncJob
from tests.conftest import install_via_fake
from tests.fakes.shoptet import FakeShoptet
from tests.sync.conftest import finished_snapshot, mirrored, shoptet_documents

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs the PostgreSQL of `make test`"),
]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
APPLICATION_NAME = "sync-import-under-test"


def database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def worker_environment() -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SHOPTET_CLIENT_ID": settings.SHOPTET_CLIENT_ID,
        "SHOPTET_CLIENT_SECRET": settings.SHOPTET_CLIENT_SECRET,
        "SHOPTET_PARTNER_URL": settings.SHOPTET_PARTNER_URL,
        "SHOPTET_API_URL": settings.SHOPTET_API_URL,
        "PUBLIC_URL": settings.PUBLIC_URL,
        "DEBUG": "true",
        "SECRET_KEY": settings.SECRET_KEY,
        "TOKEN_ENCRYPTION_KEYS": ",".join(settings.TOKEN_ENCRYPTION_KEYS),
        # libpq names the worker's connection, so the test can see what it is doing.
        "PGAPPNAME": APPLICATION_NAME,
    }


def worker_is_copying() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND state = 'active' AND query LIKE 'COPY sync_%%'",
            [APPLICATION_NAME],
        )
        return bool(cursor.fetchone()[0])


def test_a_worker_killed_mid_import_leaves_nothing_and_the_redelivery_completes(
    fake_shoptet: FakeShoptet,
) -> None:
    fake_shoptet.never_finish_jobs = True
    shop = install_via_fake(fake_shoptet, 700002, orders=2500, invoices=0)
    installation_services.onboard(installation=shop)
    job = finished_snapshot(fake_shoptet, shop, "orders")

    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.sync.import_process", str(job.pk)],
        cwd=PROJECT_ROOT,
        env=worker_environment(),
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not worker_is_copying():
        assert worker.poll() is None, worker.communicate()[1].decode()
        assert time.monotonic() < deadline, "the worker never started copying"
        time.sleep(0.005)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)

    job.refresh_from_db()
    assert job.status == "importing"
    assert Order.objects.filter(installation=shop).count() == 0
    assert OrderItem.objects.filter(installation=shop).count() == 0
    assert not SyncCursor.objects.filter(installation=shop).exists()

    # The killed run renews its lease no more: once it lapsed, the relay hands the job to a new run.
    relay = jobs.claim_due_work(now=timezone.now() + leases.LEASE + timedelta(seconds=1))
    assert relay.imports == [job.pk]
    job = snapshots.import_snapshot(job=job)

    orders = fake_shoptet.eshops[shop.eshop_id].orders
    assert (job.status, job.received, job.imported, job.skipped) == ("completed", 2500, 2500, 0)
    assert Order.objects.filter(installation=shop).count() == 2500
    assert OrderItem.objects.filter(installation=shop).count() == sum(len(o["items"]) for o in orders.values())
    assert mirrored(shop, "orders") == shoptet_documents(fake_shoptet, shop, "orders")


def test_a_second_import_of_a_job_being_imported_skips_at_once(
    fake_shoptet: FakeShoptet,
) -> None:
    """A redelivered task, a poll and job:finished may all start the import; only the first one works."""
    fake_shoptet.never_finish_jobs = True
    shop = install_via_fake(fake_shoptet, 700003, orders=3, invoices=0)
    installation_services.onboard(installation=shop)
    job = finished_snapshot(fake_shoptet, shop, "orders")
    SyncJob.objects.filter(pk=job.pk).update(status="importing")
    holding = threading.Event()
    release = threading.Event()

    def first_import_holding_the_lock() -> None:
        try:
            with transaction.atomic():
                SyncJob.objects.select_for_update().get(pk=job.pk)
                holding.set()
                release.wait(timeout=30)
        finally:
            connections.close_all()

    first = threading.Thread(target=first_import_holding_the_lock)
    first.start()
    holding.wait(timeout=10)
    started = time.monotonic()
    try:
        second = snapshots.import_snapshot(job=job)
    finally:
        release.set()
        first.join()

    assert time.monotonic() - started < 5
    assert second.status == "importing"
    assert fake_shoptet.request_count("GET", r"/api-results/") == 0
    assert Order.objects.filter(installation=shop).count() == 0
