"""A database that went away (a restart, a failover, a dropped connection) is a transient error.

PostgreSQL answers "the database system is starting up" for a moment after a restart, and every connection
opened before it is broken for good. Work that meets either waits a few seconds, on a new connection, and
runs again: it is never failed for it. Errors about the work itself (an integrity or programming error)
are not transient and are not listed here.
"""

from __future__ import annotations

import contextlib

import psycopg
from django.db import DatabaseError, InterfaceError, OperationalError, connections

from config.retries import Backoff

# Django wraps the driver's errors in its own classes; raw psycopg calls (COPY) may raise the driver's.
DATABASE_OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)
# How long one task run waits for the database to come back before it gives up to the relays' leases.
OUTAGE_PATIENCE_SECONDS = 120.0
OUTAGE_BACKOFF = Backoff(base=0.5, cap=4.0)


def outage_backoff_seconds(attempt: int) -> float:
    """Half a second, one, two, then four at most, jittered so that workers do not reconnect in step."""
    return OUTAGE_BACKOFF.seconds(attempt)


def drop_broken_connections() -> bool:
    """Close this thread's database connections so the next query opens a new one.

    False when a connection is inside a transaction of the caller's: closing it would break the caller's
    atomic block, so the error must go up to whoever opened the transaction.
    """
    opened = connections.all(initialized_only=True)
    if any(connection.in_atomic_block for connection in opened):
        return False
    for connection in opened:
        with contextlib.suppress(DatabaseError):  # a connection the server already dropped may fail to close
            connection.close()
    return True
