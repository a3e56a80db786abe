"""Limits on the install callback, before it spends a code exchange with our client secret.

Anyone can call `GET /shoptet/install/`; every call with a well-formed code costs a request to Shoptet's
OAuth server. Counters per source address and for everybody together live in the shared cache, in windows
that start with their first request. Installs are rare and must never fail because of the limiter, so a cache
that is down lets every call through.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError

from config import metrics

logger = logging.getLogger(__name__)

# The cache backends' errors when their server is gone: Redis, or the database in embedded mode.
CACHE_ERRORS = (redis.RedisError, DatabaseError, OSError)


@dataclass(frozen=True)
class Throttled:
    """The callback is refused until `retry_after` seconds have passed; `scope` is `address` or `global`."""

    scope: str
    retry_after: int


def admit_install_callback(*, remote_addr: str | None) -> Throttled | None:
    """Count one callback; None when it may go on, else which limit it hit and for how long."""
    window = settings.INSTALL_CALLBACK_THROTTLE_WINDOW
    limits = [
        ("address", f"address:{remote_addr or 'unknown'}", settings.INSTALL_CALLBACK_THROTTLE_PER_ADDRESS),
        ("global", "global", settings.INSTALL_CALLBACK_THROTTLE_GLOBAL),
    ]
    for scope, name, limit in limits:
        try:
            count, retry_after = _count(f"install-throttle:{name}", window)
        except CACHE_ERRORS as error:
            logger.warning("install throttle unavailable, letting the callback through: %s", type(error).__name__)
            return None
        if count > limit:
            metrics.increment("install_callback_refused", reason=f"throttled_{scope}")
            logger.warning("install callback throttled scope=%s", scope)
            return Throttled(scope=scope, retry_after=retry_after)
    return None


def _count(name: str, window: int) -> tuple[int, int]:
    """Add one to the counter of the window `name` is in; the count so far and the seconds the window has left."""
    now = time.time()
    # The window starts with its first request, so a burst is counted whole whenever it begins.
    anchor_key = f"{name}:start"
    cache.add(anchor_key, now, timeout=window)
    started = cache.get(anchor_key)
    started = now if started is None else float(started)
    counter_key = f"{name}:{int(started)}"
    cache.add(counter_key, 0, timeout=window + 1)
    count = cache.incr(counter_key)
    return count, max(1, int(started + window - now + 0.999))
