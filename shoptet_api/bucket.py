"""Shoptet's leaky bucket per e-shop: the last `X-RateLimit-Bucket-Filling` reading, and the pause it calls for.

Shoptet keeps a bucket of drops per addon and e-shop (200 drops; a request adds drops by its cost, measured
after it ran; 10 leak per second); a full bucket answers 429 until enough has leaked. Every answer says how
full the bucket is (`used/max`). The last reading is kept in the shared cache, so every worker that calls the
e-shop sees it. Before a request the client waits until the bucket, leaking since that reading, is below
HIGH_WATER of its size: the e-shop's calls slow down before Shoptet starts refusing them. The headroom above
HIGH_WATER is for the requests already in flight when the reading was taken (at most 3 per token).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from django.core.cache import cache

logger = logging.getLogger(__name__)

HEADER = "X-RateLimit-Bucket-Filling"
# Shoptet's documented leak rate. A slower real leak only means an occasional 429, which the client honours.
LEAK_PER_SECOND = 10.0
HIGH_WATER = 0.75
# No single pause is longer than this; a bucket that is still full answers 429 with its own Retry-After.
MAX_PAUSE_SECONDS = 30.0
_FILLING = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*")


@dataclass(frozen=True)
class Reading:
    """How full the bucket was (`used` of `size` drops) at `at` (seconds since the epoch, shared by processes)."""

    used: float
    size: float
    at: float

    def level(self, now: float) -> float:
        return max(0.0, self.used - (now - self.at) * LEAK_PER_SECOND)

    def pause(self, now: float) -> float:
        """Seconds until the bucket has leaked down to HIGH_WATER of its size."""
        excess = self.level(now) - self.size * HIGH_WATER
        return min(MAX_PAUSE_SECONDS, excess / LEAK_PER_SECOND) if excess > 0 else 0.0


def parse_filling(value: str | None) -> tuple[float, float] | None:
    """`"150/200"` → (150, 200); None for a missing or unreadable header, or a bucket of no size."""
    if not value:
        return None
    match = _FILLING.fullmatch(value)
    if match is None:
        return None
    used, size = float(match.group(1)), float(match.group(2))
    return (used, size) if size > 0 else None


def _key(eshop_id: int) -> str:
    return f"shoptet:{eshop_id}:bucket"


def record(eshop_id: int, header: str | None, *, now: float | None = None) -> None:
    """Keep the reading of one answer; it is forgotten once the bucket would have leaked empty."""
    filling = parse_filling(header)
    if filling is None:
        return
    used, size = filling
    moment = time.time() if now is None else now
    empty_after = used / LEAK_PER_SECOND + 1
    try:
        cache.set(_key(eshop_id), (used, size, moment), timeout=max(1, int(empty_after)))
    except Exception:  # noqa: BLE001 - without the cache the client only loses its early warning
        logger.warning("shoptet bucket reading not kept eshop_id=%s", eshop_id)


def reading(eshop_id: int) -> Reading | None:
    try:
        kept = cache.get(_key(eshop_id))
    except Exception:  # noqa: BLE001 - as in record(): no reading, no pause
        return None
    if not (isinstance(kept, tuple) and len(kept) == 3):
        return None
    return Reading(*kept)


def pause_before_request(eshop_id: int, *, now: float | None = None) -> float:
    """How long the next request to this e-shop should wait, from the last reading any process kept."""
    last = reading(eshop_id)
    if last is None:
        return 0.0
    return last.pause(time.time() if now is None else now)
