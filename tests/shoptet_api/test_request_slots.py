"""The e-shop's request slots: a live holder keeps them past their lease, a killed one frees them soon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack

import pytest
from django.conf import settings

from installations.models import Installation
from shoptet_api import concurrency
from shoptet_api.errors import SlotTimeout
from tests.sync.test_killed_import import PROJECT_ROOT, worker_environment

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs the shared Redis of `make test`")

ESHOP_ID = 730001
HOLDER = """
import os, sys, time
from contextlib import ExitStack
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()
from django.conf import settings
from installations.models import Installation
from shoptet_api.concurrency import request_slot
with ExitStack() as held:
    for _ in range(settings.SHOPTET_TOKEN_CONCURRENCY):
        held.enter_context(request_slot(Installation(eshop_id=int(sys.argv[1]))))
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_request_longer_than_the_lease_keeps_its_slot() -> None:
    shop = Installation(eshop_id=ESHOP_ID)
    release = threading.Event()
    holding = threading.Barrier(settings.SHOPTET_TOKEN_CONCURRENCY + 1)

    def slow_request() -> None:
        with concurrency.request_slot(shop):
            holding.wait()
            release.wait(60)

    requests = [threading.Thread(target=slow_request) for _ in range(settings.SHOPTET_TOKEN_CONCURRENCY)]
    for request in requests:
        request.start()
    try:
        holding.wait(timeout=10)
        time.sleep(concurrency.LEASE_SECONDS + 2)
        # Past the lease, every slot is still taken: the keeper renewed them.
        with pytest.raises(SlotTimeout), concurrency.request_slot(shop, wait=1):
            pass
    finally:
        release.set()
        for request in requests:
            request.join()
    with concurrency.request_slot(shop, wait=1) as slot:
        assert slot in range(settings.SHOPTET_TOKEN_CONCURRENCY)


def test_a_worker_killed_mid_request_frees_its_slots_within_the_lease() -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(ESHOP_ID + 1)],
        cwd=PROJECT_ROOT,
        env=worker_environment(),
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"held"
        shop = Installation(eshop_id=ESHOP_ID + 1)
        with pytest.raises(SlotTimeout), concurrency.request_slot(shop, wait=0.5):
            pass
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        killed = time.monotonic()
        with ExitStack() as held:
            for _ in range(settings.SHOPTET_TOKEN_CONCURRENCY):
                held.enter_context(concurrency.request_slot(shop, wait=60))
            freed = time.monotonic() - killed
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait(timeout=30)
    print(f"\nslots of a killed worker free {freed:.1f}s after the kill (lease {concurrency.LEASE_SECONDS}s)")
    assert freed <= concurrency.LEASE_SECONDS + 1
