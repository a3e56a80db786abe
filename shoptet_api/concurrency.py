"""A cross-process semaphore: at most SHOPTET_TOKEN_CONCURRENCY requests in flight per e-shop.

Shoptet's nginx allows 3 concurrent connections per API token and answers 429 to the fourth. The slots
live in the shared cache as leases that expire on their own, so a worker killed mid-request frees its
slot after LEASE_SECONDS instead of blocking the e-shop for good. `cache.add` is atomic on both the Redis
cache (SET NX) and the database cache (primary key), which is all a slot needs.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.cache import cache

from shoptet_api.errors import SlotTimeout

if TYPE_CHECKING:
    from installations.models import Installation

# Longer than any single request may take (the client's timeout), so a live request never loses its slot.
LEASE_SECONDS = int(settings.SHOPTET_API_TIMEOUT) + 40
WAIT_SECONDS = 120.0


def _slot_key(installation: Installation, slot: int) -> str:
    return f"shoptet:{installation.eshop_id}:request-slot:{slot}"


@contextmanager
def request_slot(installation: Installation, *, wait: float = WAIT_SECONDS) -> Iterator[int]:
    """Hold one of the e-shop's request slots for the duration of the block."""
    lease = f"{random.getrandbits(64):016x}"
    slot = _acquire(installation, lease, wait)
    try:
        yield slot
    finally:
        key = _slot_key(installation, slot)
        if cache.get(key) == lease:
            cache.delete(key)


def _acquire(installation: Installation, lease: str, wait: float) -> int:
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
