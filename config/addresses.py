"""The caller's address, as every endpoint reached from outside reads it (limits, logs, stored attempts)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from django.conf import settings


def client_address(meta: Mapping[str, Any]) -> str | None:
    """The caller's address: REMOTE_ADDR, or the entry TRUSTED_PROXY_COUNT proxies back in X-Forwarded-For."""
    remote = ip_or_none(meta.get("REMOTE_ADDR"))
    proxies = settings.TRUSTED_PROXY_COUNT
    if not proxies:
        return remote
    # Each trusted proxy appends the address it got the call from; entries further left are the caller's word.
    hops = [hop.strip() for hop in str(meta.get("HTTP_X_FORWARDED_FOR", "")).split(",") if hop.strip()]
    if len(hops) < proxies:
        return remote
    return ip_or_none(hops[-proxies]) or remote


def ip_or_none(value: object) -> str | None:
    """An IP address in its normal form; None for anything else (a server on a Unix socket may give a path)."""
    try:
        return str(ipaddress.ip_address(str(value or "")))
    except ValueError:
        return None
