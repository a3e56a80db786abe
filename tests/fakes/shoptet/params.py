"""Query-string parsing and paging shared by the REST API handlers."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from .clock import parse_datetime
from .messages import ApiError


def integer(query: dict[str, str], name: str, default: int | None = None) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, "invalid-parameter", f'Invalid value "{value}" of parameter "{name}".', name) from None


def moment(query: dict[str, str], name: str, *, required: bool = False) -> datetime | None:
    """A date-time parameter; a `+` that was not sent as `%2B` arrives as a space and is refused."""
    value = query.get(name)
    if value is None or value == "":
        if required:
            raise ApiError(400, "missing-parameter", f'Missing value for parameter "{name}".', name)
        return None
    try:
        return parse_datetime(value)
    except ValueError:
        raise ApiError(400, "invalid-parameter", f'Invalid date-time "{value}" of parameter "{name}".', name) from None


def boolean(query: dict[str, str], name: str) -> bool | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise ApiError(400, "invalid-parameter", f'Invalid value "{value}" of parameter "{name}".', name)


def codes(query: dict[str, str], name: str, limit: int = 50) -> list[str] | None:
    """A comma-separated list of codes, e.g. `orderCodes` (at most 50 per the spec)."""
    value = query.get(name)
    if value is None:
        return None
    items = [item for item in value.split(",") if item]
    if not items:
        raise ApiError(400, "missing-parameter", f'Missing value for parameter "{name}".', name)
    if len(items) > limit:
        message = f'Invalid "{name}" parameter. Expected max. {limit} elements, but {len(items)} given.'
        raise ApiError(400, "invalid-parameter", message, name)
    return items


def includes(query: dict[str, str]) -> set[str]:
    """`include=a,b`: order and case do not matter (spec, "Section on demand")."""
    return {item.strip().lower() for item in query.get("include", "").split(",") if item.strip()}


def paginate(items: list[Any], query: dict[str, str], default: int, maximum: int) -> tuple[list[Any], dict[str, int]]:
    """One page plus Shoptet's `paginator`; a too large `itemsPerPage` is clamped to the maximum (spec, "Paging")."""
    per_page = min(max(integer(query, "itemsPerPage", default) or default, 1), maximum)
    page = max(integer(query, "page", 1) or 1, 1)
    page_count = math.ceil(len(items) / per_page)
    if page > max(page_count, 1):
        message = f'Page "{page}" not found, max page is {page_count}.'
        raise ApiError(404, "page-not-found", message, "page")
    chunk = items[(page - 1) * per_page : page * per_page]
    paginator = {
        "totalCount": len(items),
        "page": page,
        "pageCount": page_count,
        "itemsOnPage": len(chunk),
        "itemsPerPage": per_page,
    }
    return chunk, paginator
