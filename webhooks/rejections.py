"""What the webhook endpoint keeps of calls it does not accept, and how many it takes from one address.

Anyone can post to the endpoint. A rejected or ignored call keeps a bounded prefix of its body (with the
whole body's length and SHA-256, so staff can still tell two bodies apart), and rejections from one source
address are limited per minute: over the limit the endpoint stores nothing and answers 429. The counters
live in the shared cache; when it is down the endpoint keeps working without the limit.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError

from config import metrics

logger = logging.getLogger(__name__)

# The longest a UTF-8 character is: a cut moves back at most this many bytes to stay on a character boundary.
MAX_UTF8_CHARACTER = 4
# Rejections are counted in windows of this many seconds.
RATE_WINDOW_SECONDS = 60
# After the cache failed, the endpoint does without it for this long instead of waiting on every rejection.
CACHE_PAUSE_SECONDS = 30.0
# IPv6 addresses are counted by their /64: one host usually holds a whole /64.
IPV6_PREFIX = 64
# Why a call was rejected, as the label of webhook_deliveries_rate_limited_total: a fixed set.
REASONS = ("too_large", "malformed", "unknown_eshop", "bad_signature", "outside_window")

_cache_paused_until = 0.0


def body_prefix(body: bytes, limit: int) -> bytes:
    """At most `limit` bytes of `body`, cut before a UTF-8 character that would be split."""
    return body[: _cut(body, limit)]


def _cut(body: bytes, limit: int) -> int:
    if len(body) <= limit:
        return len(body)
    # A continuation byte (10xxxxxx) at the cut belongs to a character that starts before it: cut before that.
    for cut in range(limit, max(limit - MAX_UTF8_CHARACTER, -1), -1):
        if body[cut] & 0xC0 != 0x80:
            return cut
    return limit  # not UTF-8 there: any cut will do


@dataclass(frozen=True)
class Verdict:
    """Whether a rejected call may be stored; when not, how long the caller should wait."""

    allowed: bool
    retry_after: int = 0


def admit_rejection(address: str | None, reason: str) -> Verdict:
    """Count one rejection from `address`; refuse it once the address is over its limit for the window.

    A window opens with an address's first rejection and lasts RATE_WINDOW_SECONDS.
    """
    limit = settings.WEBHOOK_REJECTIONS_PER_MINUTE
    if not limit:
        return Verdict(allowed=True)
    count = _count(f"webhooks:rejections:{_source_key(address)}")
    if count is None or count <= limit:
        return Verdict(allowed=True)
    label = reason if reason in REASONS else "other"
    metrics.increment("webhook_deliveries_rate_limited", reason=label)
    if count == limit + 1:
        # One line per address and window, however many calls follow: the log stays bounded too.
        logger.warning(
            "webhook rejections rate-limited source=%s limit=%s window=%ss", address, limit, RATE_WINDOW_SECONDS
        )
    return Verdict(allowed=False, retry_after=RATE_WINDOW_SECONDS)


def _source_key(address: str | None) -> str:
    if address is None:
        return "unknown"
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # an IPv4 caller of a dual-stack socket is still one IPv4 host
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False).network_address)
    return str(ip)


def _count(key: str) -> int | None:
    """Add one to the window's counter and return it; None when the cache cannot count (fail open)."""
    global _cache_paused_until
    if time.monotonic() < _cache_paused_until:
        return None
    # Redis keeps the key's expiry on incr; the database cache of embedded mode renews it (a longer window).
    try:
        if cache.add(key, 1, timeout=RATE_WINDOW_SECONDS):
            return 1
        return int(cache.incr(key))
    except ValueError:
        return 1  # the key expired between add and incr: a new window
    except (redis.RedisError, DatabaseError) as error:
        _cache_paused_until = time.monotonic() + CACHE_PAUSE_SECONDS
        logger.warning("webhook rejection limit off for %ss: cache unavailable (%s)", CACHE_PAUSE_SECONDS, error)
        return None


def resume_cache() -> None:
    """Use the cache again at once (tests change it under the endpoint's feet)."""
    global _cache_paused_until
    _cache_paused_until = 0.0
