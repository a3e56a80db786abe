"""Sync runs as jobs: starting one (the one place a sync starts), retrying, failing and completing it, the relay.

A snapshot's SyncJob: `requested` → Shoptet accepted the job: `running` → `job:finished` (or a poll) found
it done: `importing` → `completed`; any step may end in `failed` (sync.snapshots). A `/changes` run:
`requested` → `running` → `completed` or `failed` (sync.changes); a failed run leaves the cursor where it
was and schedules a new run with backoff (`SyncCursor.retry_at`), which the relay starts; the next run
that completes clears that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from config.retries import Backoff
from config.sweeps import EVERYTHING, Slice, slice_at
from installations import toggles
from installations.models import Installation
from notifications import services as notifications
from sync import leases
from sync.documents import RESOURCES, resource_named
from sync.importer import ImportCounts
from sync.models import SyncCursor, SyncJob

logger = logging.getLogger(__name__)

Status = SyncJob.Status
Mode = SyncJob.Mode

# Each `/changes` read starts this long before the previous one did: changes made while it paged are
# read again (and skipped when already stored), and small clock differences with Shoptet do not matter.
CURSOR_OVERLAP = timedelta(minutes=5)
STALE_REQUEST = timedelta(minutes=10)
STALE_RUN = timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT) + timedelta(minutes=10)
FINISHED_JOBS_KEPT = timedelta(days=30)
# Finished `/changes` runs forgotten per reconciliation tick: three times what a tick adds with 10,000
# e-shops (two resources each an hour: 333 runs a minute), so the old ones never pile up.
PRUNE_BATCH = 1_000
# A failed `/changes` run is run again after 1, 2, 4 … minutes, at most an hour apart, until one completes:
# the hourly reconciliation alone would leave the mirror wrong for up to an hour after every failure.
# No jitter: e-shops fail at their own moments, and each e-shop's calls have their own request slots.
CHANGES_RETRY = Backoff(base=60.0, cap=3600.0, jitter=0)


class SyncError(Exception):
    """A sync cannot be started or retried; the message says why."""


class SyncRunning(SyncError):
    """A run of the same kind is already in flight for this installation and resource."""

    def __init__(self, job: SyncJob) -> None:
        super().__init__(f"{job} is already {job.status}")
        self.job = job


def request_sync(
    *,
    installation: Installation,
    resource: str,
    mode: str,
    cause: str,
    change_time_from: datetime | None = None,
    creation_time_to: datetime | None = None,
) -> SyncJob:
    """Record a new sync run; the caller enqueues it. Raises SyncRunning when one is in flight."""
    resource_named(resource)
    if not toggles.resource_enabled(installation, resource):
        raise SyncError(f"{resource} are switched off in the settings of e-shop {installation.eshop_id}")
    if mode not in Mode.values:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(Mode.values)}")
    if not installation.is_active:
        raise SyncError(f"e-shop {installation.eshop_id} is {installation.status}: nothing can be synced")
    try:
        with transaction.atomic():
            return SyncJob.objects.create(
                installation=installation,
                resource=resource,
                mode=mode,
                cause=cause[:255],
                change_time_from=change_time_from,
                creation_time_to=creation_time_to,
                enqueued_at=timezone.now(),
            )
    except IntegrityError:
        running = in_flight(installation, resource, mode)
        if running is None:  # it finished between the insert and this look
            raise
        raise SyncRunning(running) from None


def request_initial_import(*, installation: Installation) -> list[SyncJob]:
    """Full snapshots of orders and invoices, unless one already completed or runs; the caller enqueues."""
    jobs = []
    for name in RESOURCES:
        snapshots = SyncJob.objects.filter(installation=installation, resource=name, mode=Mode.SNAPSHOT)
        if snapshots.exclude(status=Status.FAILED).exists() or not toggles.resource_enabled(installation, name):
            continue
        try:
            jobs.append(
                request_sync(installation=installation, resource=name, mode=Mode.SNAPSHOT, cause="initial import")
            )
        except SyncRunning:
            continue
    return jobs


def active_installations() -> QuerySet[Installation]:
    return Installation.objects.filter(status=Installation.Status.ACTIVE)


def changes_slice(*, moment: datetime | None = None) -> Slice:
    """The slice of active installations whose `/changes` a reconciliation tick at `moment` (now) reads."""
    return slice_at(settings.CHANGES_SWEEP_PERIOD, population=active_installations().count(), moment=moment)


def installations_to_reconcile(*, share: Slice = EVERYTHING) -> list[int]:
    """The active installations in `share` (one beat tick's slice of the reconciliation), by pk."""
    return list(share.of(active_installations()).order_by("pk").values_list("pk", flat=True))


def request_changes(*, installation: Installation) -> list[SyncJob]:
    """A `/changes` run of each resource the e-shop syncs, unless one is in flight; the caller enqueues."""
    jobs = []
    for name in RESOURCES:
        if not toggles.resource_enabled(installation, name):
            continue
        try:
            jobs.append(
                request_sync(installation=installation, resource=name, mode=Mode.CHANGES, cause="reconciliation")
            )
        except SyncRunning:
            continue
    return jobs


def request_changes_everywhere(*, share: Slice = EVERYTHING) -> list[SyncJob]:
    """`request_changes` for every installation in `share`, in one go (the beat tick fans out instead)."""
    installations = Installation.objects.filter(pk__in=installations_to_reconcile(share=share)).order_by("pk")
    return [job for installation in installations for job in request_changes(installation=installation)]


# A snapshot that starts over asks Shoptet for a new job: nothing of the old one is kept.
NEW_SHOPTET_JOB: dict[str, Any] = {
    "status": Status.REQUESTED,
    "shoptet_job_id": "",
    "result_url": "",
    "valid_until": None,
    "polls": 0,
    "next_poll_at": None,
}


def retry_job(*, job: SyncJob) -> SyncJob:
    """Run a failed job again; a snapshot reuses its result file while that is valid. The caller enqueues."""
    if job.status != Status.FAILED:
        raise SyncError(f"{job} is {job.status}; only failed jobs can be retried")
    if not job.installation.is_active:
        raise SyncError(f"e-shop {job.installation.eshop_id} is {job.installation.status}: nothing can be synced")
    now = timezone.now()
    reuse = job.mode == Mode.SNAPSHOT and bool(job.result_url) and job.valid_until is not None and job.valid_until > now
    changes: dict[str, Any] = {"error": "", "finished_at": None, "enqueued_at": now, "attempts": F("attempts") + 1}
    if reuse:
        changes.update(status=Status.RUNNING, next_poll_at=None)
    else:
        changes.update(NEW_SHOPTET_JOB, restarts=0, started_at=None)
    try:
        with transaction.atomic():
            SyncJob.objects.filter(pk=job.pk, status=Status.FAILED).update(**changes)
    except IntegrityError:
        running = in_flight(job.installation, job.resource, job.mode)
        if running is None:
            raise
        raise SyncRunning(running) from None
    job.refresh_from_db()
    return job


def in_flight(installation: Installation, resource: str, mode: str) -> SyncJob | None:
    """The unfinished run of this kind, if there is one."""
    return SyncJob.objects.filter(
        installation=installation, resource=resource, mode=mode, status__in=SyncJob.UNFINISHED
    ).first()


@dataclass
class Relay:
    polls: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    changes: list[int] = field(default_factory=list)
    imports: list[int] = field(default_factory=list)


@transaction.atomic
def claim_due_work(*, now: datetime | None = None) -> Relay:
    """Jobs to poll, and work enqueued long ago that never ran (broker flushed): claim it to enqueue again.

    Stale refresh requests are the relay's too, claimed by refresh.claim_stale_refreshes."""
    now = now or timezone.now()
    relay = Relay()
    jobs = SyncJob.objects.select_for_update(skip_locked=True)
    due = jobs.filter(status=Status.RUNNING, mode=Mode.SNAPSHOT, next_poll_at__lte=now)
    relay.polls = list(due.values_list("pk", flat=True))
    # Provisional: the poll sets the real next time; this keeps a lost poll from being sent every minute.
    SyncJob.objects.filter(pk__in=relay.polls).update(next_poll_at=now + STALE_REQUEST)
    stale_requests = jobs.filter(status=Status.REQUESTED).filter(
        Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=now - STALE_REQUEST)
    )
    # A run renews its lease every few seconds; one that lapsed is a dead worker's. A run without a lease
    # (started before leases existed) is taken for dead only after the task time limit.
    lapsed = Q(lease_expires_at__lte=now) | Q(lease_expires_at__isnull=True, updated_at__lt=now - STALE_RUN)
    stale_runs = jobs.filter(Q(status=Status.IMPORTING) | Q(status=Status.RUNNING, mode=Mode.CHANGES)).filter(lapsed)
    for pk, mode, status in list(stale_requests.values_list("pk", "mode", "status")) + list(
        stale_runs.values_list("pk", "mode", "status")
    ):
        if status == Status.IMPORTING:
            relay.imports.append(pk)
        elif mode == Mode.CHANGES:
            relay.changes.append(pk)
        else:
            relay.starts.append(pk)
    SyncJob.objects.filter(pk__in=relay.starts + relay.changes + relay.imports).update(enqueued_at=now, updated_at=now)
    # Handed on: the new run takes the job at once, and the relay sends it again only if that run never
    # takes it within a lease.
    SyncJob.objects.filter(pk__in=relay.imports).update(lease_owner="", lease_expires_at=now + leases.LEASE)
    # A `/changes` run claims only a requested job; this one's worker is gone (past the task time limit).
    SyncJob.objects.filter(pk__in=relay.changes, status=Status.RUNNING).update(status=Status.REQUESTED)
    relay.changes += _request_due_retries(now)
    return relay


def _request_due_retries(now: datetime) -> list[int]:
    """A new `/changes` run for each failed one whose retry is due; each e-shop's retry is its own job."""
    due = (
        SyncCursor.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("installation")
        .filter(retry_at__lte=now, installation__status=Installation.Status.ACTIVE)
        .order_by("retry_at", "pk")
    )
    jobs = []
    for cursor in due:
        # Taken off the schedule whatever happens next: the run's end schedules the next retry or clears it.
        SyncCursor.objects.filter(pk=cursor.pk).update(retry_at=None)
        try:
            job = request_sync(
                installation=cursor.installation,
                resource=cursor.resource,
                mode=Mode.CHANGES,
                cause=f"automatic retry ({cursor.failures} failed in a row)",
            )
        except SyncError:
            continue  # the run in flight reads the same changes, or the resource is switched off
        jobs.append(job.pk)
    return jobs


def prune_jobs(*, now: datetime | None = None, limit: int = PRUNE_BATCH) -> int:
    """Forget up to `limit` finished `/changes` runs older than FINISHED_JOBS_KEPT, oldest first, through
    their partial index; snapshots stay as the history of imports. A tick's share is bounded: 10,000
    e-shops make about 480,000 runs a day, which every minute's tick takes away a slice of."""
    cutoff = (now or timezone.now()) - FINISHED_JOBS_KEPT
    old = SyncJob.objects.filter(mode=Mode.CHANGES, finished_at__lt=cutoff).order_by("finished_at")
    deleted, _ = SyncJob.objects.filter(pk__in=list(old.values_list("pk", flat=True)[:limit])).delete()
    return deleted


def fail_job(*, job: SyncJob, error: str) -> SyncJob:
    """Give up on a job (a refusal, retries exhausted, time limit). A `/changes` run is retried later by a
    new run; any other job stays failed until somebody retries it."""
    now = timezone.now()
    failed = (
        SyncJob.objects.filter(pk=job.pk)
        .exclude(status__in=[Status.COMPLETED, Status.FAILED])
        .update(
            status=Status.FAILED,
            error=error[:2000],
            finished_at=now,
            next_poll_at=None,
            updated_at=now,
            **leases.released(),
        )
    )
    job.refresh_from_db()
    logger.warning("sync job failed job=%s eshop_id=%s error=%s", job.pk, job.installation.eshop_id, error)
    # A suspended e-shop is not retried: addon:approve reads /changes when it comes back.
    if failed and job.mode == Mode.CHANGES and job.installation.is_active:
        _schedule_retry(job, now)
    if failed:
        notifications.notify_sync_failure(job=job)
    return job


def retry_delay(failures: int) -> timedelta:
    """How long after its `failures`-th failure in a row a `/changes` run is retried."""
    return CHANGES_RETRY.delay(failures - 1)


def _schedule_retry(job: SyncJob, now: datetime) -> None:
    """Record the failure (the cursor stays) and when the run is tried again."""
    with transaction.atomic():
        cursor, _ = SyncCursor.objects.select_for_update().get_or_create(
            installation=job.installation, resource=job.resource
        )
        cursor.failures += 1
        cursor.failed_at = now
        cursor.failed_job = job
        cursor.error = job.error
        retry_at = now + retry_delay(cursor.failures)
        cursor.retry_at = retry_at
        cursor.save()
    logger.warning(
        "changes run retried later eshop_id=%s resource=%s failures=%s retry_at=%s",
        job.installation.eshop_id,
        job.resource,
        cursor.failures,
        retry_at.isoformat(),
    )


def _clear_failure(job: SyncJob) -> None:
    SyncCursor.objects.filter(installation=job.installation, resource=job.resource, failures__gt=0).update(
        failures=0, failed_at=None, failed_job=None, error="", retry_at=None, updated_at=timezone.now()
    )


def complete_job(*, job: SyncJob, counts: ImportCounts, note: str = "") -> SyncJob:
    """Record a finished run's counts; a completed `/changes` run clears the failures of its cursor."""
    _store_counts(job, counts)
    job.status = Status.COMPLETED
    job.note = note[:255]
    job.error = ""
    job.finished_at = timezone.now()
    job.save()
    if job.mode == Mode.CHANGES:
        _clear_failure(job)
    logger.info(
        "sync job completed job=%s eshop_id=%s mode=%s resource=%s received=%s imported=%s deleted=%s note=%s",
        job.pk,
        job.installation.eshop_id,
        job.mode,
        job.resource,
        job.received,
        job.imported,
        job.deleted,
        note,
    )
    return job


def _store_counts(job: SyncJob, counts: ImportCounts) -> None:
    job.received = counts.received
    job.imported = counts.imported
    job.skipped = counts.skipped
    job.deleted = counts.deleted


def advance_cursor(*, installation: Installation, resource: str, moment: datetime) -> None:
    """Move the `/changes` cursor forward to `moment`, never back."""
    with transaction.atomic():
        cursor, _ = SyncCursor.objects.select_for_update().get_or_create(installation=installation, resource=resource)
        if cursor.changes_from is None or moment > cursor.changes_from:
            cursor.changes_from = moment
            cursor.save()
