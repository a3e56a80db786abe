"""REST throttling that fails open: the request counts live in Redis, and Redis being down must not turn
reads that need only PostgreSQL into 500s.

While the cache cannot be reached a request goes through unthrottled, with a warning and a count in
`api_throttle_unavailable_total` (kept in the process: the metrics store is the same Redis). After a
failure the cache is not asked again for a few seconds, so an unreachable Redis costs one connect timeout
per process now and then, not one per request.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import redis
from rest_framework import throttling

from config import metrics

if TYPE_CHECKING:
    # DRF imports this module while rest_framework.views itself is being imported (DEFAULT_THROTTLE_CLASSES).
    from rest_framework.request import Request
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)

# What the cache raises when its server is down, unreachable or too slow to answer.
CACHE_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, OSError)
# After a failure, requests go through without asking the cache for this long.
SKIP_SECONDS = 5.0

_skip_until = 0.0
_lock = threading.Lock()


def cache_unavailable() -> bool:
    return time.monotonic() < _skip_until


def note_cache_failure(error: Exception, *, scope: str) -> None:
    """Count the unthrottled request; log once per skip period, not once per request."""
    global _skip_until
    with _lock:
        first = not cache_unavailable()
        _skip_until = time.monotonic() + SKIP_SECONDS
    if first:
        logger.warning("api throttle cache unavailable, requests pass unthrottled scope=%s error=%r", scope, error)
    metrics.increment_in_process("api_throttle_unavailable", scope=scope)


class UserRateThrottle(throttling.UserRateThrottle):
    """DRF's per-user rate, failing open while the cache is unavailable."""

    def allow_request(self, request: Request, view: APIView) -> bool:
        if cache_unavailable():
            metrics.increment_in_process("api_throttle_unavailable", scope=self.scope or "")
            return True
        try:
            return bool(super().allow_request(request, view))
        except CACHE_ERRORS as error:
            note_cache_failure(error, scope=self.scope or "")
            return True
