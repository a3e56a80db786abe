"""A cross-process semaphore: at most SHOPTET_TOKEN_CONCURRENCY requests in flight per e-shop.

Shoptet's nginx allows 3 concurrent connections per API token and answers 429 to the fourth. The slots
live in the shared cache as short leases. While a process holds slots, a keeper thread of its own renews
them every RENEW_SECONDS, so a live request keeps its slot however long Shoptet takes, and a worker killed
mid-request (OOM, redeploy) frees its slots within LEASE_SECONDS instead of stalling the e-shop for the
length of the client's timeout. `cache.add` is atomic on both the Redis cache (SET NX) and the database
cache (primary key), which is all a slot needs.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.core.cache import cache
from django.db import connection

from shoptet_api.errors import SlotTimeout
from shoptet_api.tenant import Tenant

logger = logging.getLogger(__name__)

# How long a slot outlives its holder; the keeper renews well within it, so several renewals may be
# missed (a busy machine, a slow cache) before a live request could lose its slot.
LEASE_SECONDS = 10
RENEW_SECONDS = 3.0
WAIT_SECONDS = 120.0


def _slot_key(installation: Tenant, slot: int) -> str:
    return f"shoptet:{installation.eshop_id}:request-slot:{slot}"


class _Keeper:
    """Renews the slots this process holds, from one thread that runs only while there are any."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        # Also after a fork: the child holds none of its parent's slots, and has none of its threads.
        self._lock = threading.Lock()
        self._held: dict[str, str] = {}
        self._thread: threading.Thread | None = None

    def hold(self, key: str, lease: str) -> None:
        with self._lock:
            self._held[key] = lease
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="request-slot-keeper", daemon=True)
                self._thread.start()

    def release(self, key: str) -> None:
        with self._lock:
            self._held.pop(key, None)

    def _run(self) -> None:
        try:
            while True:
                time.sleep(RENEW_SECONDS)
                with self._lock:
                    if not self._held:
                        self._thread = None
                        return
                    held = dict(self._held)
                self._renew(held)
        finally:
            connection.close()  # this thread's own, when the cache is the database

    def _renew(self, held: dict[str, str]) -> None:
        for key, lease in held.items():
            try:
                if cache.get(key) == lease:
                    cache.touch(key, LEASE_SECONDS)
            except Exception:  # noqa: BLE001 - the cache is down: the request fails on its own, or lives on
                logger.warning("request slot renewal failed key=%s", key)


_keeper = _Keeper()
os.register_at_fork(after_in_child=_keeper.reset)


@contextmanager
def request_slot(installation: Tenant, *, wait: float = WAIT_SECONDS) -> Iterator[int]:
    """Hold one of the e-shop's request slots for the duration of the block."""
    lease = f"{random.getrandbits(64):016x}"
    slot = _acquire(installation, lease, wait)
    key = _slot_key(installation, slot)
    _keeper.hold(key, lease)
    try:
        yield slot
    finally:
        _keeper.release(key)
        if cache.get(key) == lease:
            cache.delete(key)


def _acquire(installation: Tenant, lease: str, wait: float) -> int:
    deadline = time.monotonic() + wait
    slots = list(range(settings.SHOPTET_TOKEN_CONCURRENCY))
    pause = 0.01
    while True:
        random.shuffle(slots)
        for slot in slots:
            if cache.add(_slot_key(installation, slot), lease, timeout=LEASE_SECONDS):
                return slot
        if time.monotonic() > deadline:
            raise SlotTimeout(f"no free request slot for e-shop {installation.eshop_id} within {wait:.0f} s")
        time.sleep(pause + random.random() * pause)  # noqa: S311 - jitter
        pause = min(pause * 2, 0.2)
