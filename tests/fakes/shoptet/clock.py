"""Time for the fake: Shoptet's date formats and a clock that tests can move forward."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from email.utils import format_datetime as http_date

try:
    from zoneinfo import ZoneInfo

    ESHOP_TZ: tzinfo = ZoneInfo("Europe/Prague")
except (ImportError, KeyError, OSError):  # no tz database on the machine: winter time is close enough
    ESHOP_TZ = timezone(timedelta(hours=1))

TIMEZONE_NAME = "Europe/Prague"

# Shoptet writes `2018-05-29T09:02:27+0200` (no colon in the offset); requests may also use `+02:00`, or no
# offset at all (typeDateTimeRequest), which means the e-shop's time zone.
_DATETIME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:([+-])(\d{2}):?(\d{2}))?$")


class Clock:
    """Wall-clock time plus an offset, so tests can expire tokens and results without sleeping."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), ESHOP_TZ).replace(microsecond=0)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds

    def reset(self) -> None:
        with self._lock:
            self._offset = 0.0


def format_datetime(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(ESHOP_TZ).strftime("%Y-%m-%dT%H:%M:%S%z")


def format_date(moment: datetime | date | None) -> str | None:
    if moment is None:
        return None
    if isinstance(moment, datetime):
        moment = moment.astimezone(ESHOP_TZ).date()
    return moment.isoformat()


def format_http_date(timestamp: float) -> str:
    return http_date(datetime.fromtimestamp(timestamp, UTC), usegmt=True)


def parse_datetime(value: str) -> datetime:
    """Parse a date-time query parameter; raise ValueError for anything Shoptet would refuse.

    A `+` sent unencoded in a query string arrives as a space, which Shoptet does not accept either.
    """
    match = _DATETIME.match(value)
    if not match:
        raise ValueError(value)
    local, sign, hours, minutes = match.groups()
    parsed = datetime.strptime(local, "%Y-%m-%dT%H:%M:%S")
    if sign is None:
        return parsed.replace(tzinfo=ESHOP_TZ)
    offset = timedelta(hours=int(hours), minutes=int(minutes))
    return parsed.replace(tzinfo=timezone(offset if sign == "+" else -offset))
