"""The lease of a running sync job: taken atomically by one run, renewed by a heartbeat, reclaimed once it lapses.

A worker that dies (SIGKILL, OOM, a container stop) renews nothing, so its job's lease lapses after LEASE and
the relay hands the job to a new run. The heartbeat runs in a thread with its own database connection,
because the run's own connection is inside the import's transaction, where a renewal would stay invisible
until the commit.
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import datetime, timedelta
from types import TracebackType

from django.db import DatabaseError, connections
from django.db.models import Q
from django.utils import timezone

from sync.models import SyncJob

logger = logging.getLogger(__name__)

LEASE = timedelta(seconds=20)
# Several renewals fit in one lease: a renewal delayed by a busy database does not lose it.
RENEW_EVERY_SECONDS = 4.0


class LeaseLost(Exception):
    """Another run took the job over (this one was taken for dead): this run must change nothing."""


def new_owner() -> str:
    return uuid.uuid4().hex


def is_live(job: SyncJob, now: datetime | None = None) -> bool:
    """Whether a run holds the job's lease right now (a handed-on job has no owner and is free)."""
    now = now or timezone.now()
    return bool(job.lease_owner) and job.lease_expires_at is not None and job.lease_expires_at > now


def takeable(owner: str, now: datetime) -> Q:
    """Jobs whose lease `owner` may take: free, handed on, lapsed, or its own already (a retry of the same run)."""
    return Q(lease_owner="") | Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now) | Q(lease_owner=owner)


def lease_fields(owner: str, now: datetime) -> dict[str, object]:
    return {"lease_owner": owner, "lease_expires_at": now + LEASE}


def released() -> dict[str, object]:
    return {"lease_owner": "", "lease_expires_at": None}


class Heartbeat:
    """Renews the job's lease every few seconds while the run works; `check()` raises once it was lost."""

    def __init__(self, job_id: int, owner: str) -> None:
        self.job_id = job_id
        self.owner = owner
        self.lost = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stopping.set()
        self._thread.join()

    def check(self) -> None:
        if self.lost:
            raise LeaseLost(f"sync job {self.job_id}: the lease went to another run")

    def _run(self) -> None:
        try:
            while not self._stopping.wait(RENEW_EVERY_SECONDS):
                if not self._renew():
                    self.lost = True
                    return
        finally:
            connections.close_all()  # this thread's connections only

    def _renew(self) -> bool:
        now = timezone.now()
        try:
            renewed = SyncJob.objects.filter(pk=self.job_id, lease_owner=self.owner).update(
                lease_expires_at=now + LEASE
            )
        except DatabaseError as error:
            # The run's own statements fail too while the database is away; the next beat tries again.
            logger.warning("lease renewal failed job=%s error=%s", self.job_id, type(error).__name__)
            connections.close_all()
            return True
        return renewed > 0
