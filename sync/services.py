"""Order and invoice sync: snapshots (request, poll, import), `/changes` reconciliation, webhook refreshes.

Snapshot lifecycle of a SyncJob: `requested` → Shoptet accepted the job: `running` → `job:finished`
(or a poll) found it done: `importing` → `completed`; any step may end in `failed`. A result that
expired before it was read starts a new Shoptet job for the same SyncJob.

A `/changes` run: `requested` → `running` → `completed` or `failed`; a transient error hands it back as
`requested` for the task's retry. A failed run leaves the cursor where it was and schedules a new run
with backoff (`SyncCursor.retry_at`), which the relay starts; the next run that completes clears that.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import IO, Any

from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db import connection as db_connection
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from config.sweeps import EVERYTHING, Slice, slice_at
from installations import toggles
from installations.models import Installation
from notifications import services as notifications
from shoptet_api.client import ShoptetClient
from shoptet_api.errors import (
    TRANSIENT_ERRORS,
    Forbidden,
    NotFound,
    ShoptetError,
    TransportError,
)
from sync import importer, leases, remote
from sync.documents import RESOURCES, Resource, items_of, moment, resource_named
from sync.importer import ImportCounts
from sync.models import Document, RefreshRequest, SyncCursor, SyncJob

logger = logging.getLogger(__name__)

Status = SyncJob.Status
Mode = SyncJob.Mode

# Shoptet marks a job that never finishes failed 3 hours after its creation and sends no job:finished.
JOB_TIMEOUT = timedelta(hours=3)
# Shoptet refuses the 11th detail request of an unfinished job (403 job-detail-try-counter-exceeded-limit).
MAX_JOB_POLLS = 10
# When to look at a job whose job:finished did not come: ten polls spread over the three hours.
POLL_DELAYS = [timedelta(minutes=minutes) for minutes in (1, 2, 4, 8, 15, 30, 30, 30, 30, 30)]
# An expired result is requested again this many times before the job fails.
MAX_RESTARTS = 3
# `/changes` keeps 30 days of history; a cursor that gets close to that is caught up by a snapshot.
CHANGES_WINDOW = timedelta(days=30)
CHANGES_SAFETY = timedelta(days=1)
# Each `/changes` read starts this long before the previous one did: changes made while it paged are
# read again (and skipped when already stored), and small clock differences with Shoptet do not matter.
CURSOR_OVERLAP = timedelta(minutes=5)
CHANGES_BATCH = 200
# Claimed per round, fetched up to the e-shop's request slots in parallel; a run covers REFRESH_LIMIT.
REFRESH_BATCH = 30
REFRESH_LIMIT = 600
# A run stops claiming after this long and hands on (see refresh_pending). Its running mark is renewed each
# round and lapses with the claims of a run whose worker died, so the relay's new run finds it gone.
REFRESH_RUN_SECONDS = 2.0
REFRESH_RUNNING_SECONDS = 20
# A claim older than this is a killed run's: the relay (every 10 s) hands its requests to a new run. A round
# of REFRESH_BATCH fetches is far shorter, and each round claims afresh; should a round outlast it, a second
# run fetches the same documents again, which the newer-changeTime rule makes harmless.
REFRESH_CLAIM_TTL = timedelta(seconds=20)
REFRESH_STALE = timedelta(seconds=20)
STALE_REQUEST = timedelta(minutes=10)
STALE_RUN = timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT) + timedelta(minutes=10)
FINISHED_JOBS_KEPT = timedelta(days=30)
# Finished `/changes` runs forgotten per reconciliation tick: three times what a tick adds with 10,000
# e-shops (two resources each an hour: 333 runs a minute), so the old ones never pile up.
PRUNE_BATCH = 1_000
# A failed `/changes` run is run again after 1, 2, 4 … minutes, at most an hour apart, until one completes:
# the hourly reconciliation alone would leave the mirror wrong for up to an hour after every failure.
# No jitter: e-shops fail at their own moments, and each e-shop's calls have their own request slots.
RETRY_FACTOR = timedelta(minutes=1)
RETRY_MAX = timedelta(hours=1)


class SyncError(Exception):
    """A sync cannot be started or retried; the message says why."""


class SyncRunning(SyncError):
    """A run of the same kind is already in flight for this installation and resource."""

    def __init__(self, job: SyncJob) -> None:
        super().__init__(f"{job} is already {job.status}")
        self.job = job


ProgressCallback = Callable[[int, int, int | None], None]  # documents, bytes read, bytes in total (if known)


# ---------------------------------------------------------------------------
# Starting and retrying
# ---------------------------------------------------------------------------


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
        running = _in_flight(installation, resource, mode)
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
        changes.update(
            status=Status.REQUESTED,
            shoptet_job_id="",
            result_url="",
            valid_until=None,
            polls=0,
            next_poll_at=None,
            restarts=0,
            started_at=None,
        )
    try:
        with transaction.atomic():
            SyncJob.objects.filter(pk=job.pk, status=Status.FAILED).update(**changes)
    except IntegrityError:
        running = _in_flight(job.installation, job.resource, job.mode)
        if running is None:
            raise
        raise SyncRunning(running) from None
    job.refresh_from_db()
    return job


def _in_flight(installation: Installation, resource: str, mode: str) -> SyncJob | None:
    return SyncJob.objects.filter(
        installation=installation, resource=resource, mode=mode, status__in=SyncJob.UNFINISHED
    ).first()


# ---------------------------------------------------------------------------
# Snapshots
# ---------------------------------------------------------------------------


def start_snapshot(*, job: SyncJob) -> SyncJob:
    """Ask Shoptet for the snapshot job of a requested SyncJob; a no-op for any other state."""
    with transaction.atomic():
        locked = SyncJob.objects.select_for_update().select_related("installation").get(pk=job.pk)
        if locked.status != Status.REQUESTED or locked.mode != Mode.SNAPSHOT:
            return locked
        installation = locked.installation
        if not installation.is_active:
            return _fail(locked, f"e-shop {installation.eshop_id} is {installation.status}: not synced")
        if not toggles.resource_enabled(installation, locked.resource):
            return _fail(locked, f"{locked.resource} are switched off in the settings: not synced")
        resource = resource_named(locked.resource)
        params = resource.snapshot_params()
        if locked.change_time_from is not None:
            params["changeTimeFrom"] = remote.shoptet_time(locked.change_time_from)
        params.update(remote.creation_filters(toggles.import_since(installation), locked.creation_time_to))
        try:
            shoptet_job_id = remote.request_snapshot(ShoptetClient(installation), resource.name, params)
        except TRANSIENT_ERRORS:
            raise
        except ShoptetError as error:
            return _fail(locked, f"Shoptet refused the snapshot: {error}")
        now = timezone.now()
        locked.shoptet_job_id = shoptet_job_id
        locked.status = Status.RUNNING
        locked.started_at = now
        locked.polls = 0
        locked.next_poll_at = now + POLL_DELAYS[0]
        locked.save()
    logger.info(
        "snapshot started eshop_id=%s resource=%s job=%s shoptet_job=%s",
        installation.eshop_id,
        locked.resource,
        locked.pk,
        shoptet_job_id,
    )
    return locked


def finished_job(*, installation: Installation, shoptet_job_id: str) -> SyncJob | None:
    """The SyncJob that a `job:finished` delivery is about, if it still waits for its result."""
    return SyncJob.objects.filter(
        installation=installation, shoptet_job_id=shoptet_job_id, mode=Mode.SNAPSHOT, status=Status.RUNNING
    ).first()


def poll_snapshot(*, job: SyncJob) -> bool:
    """Look at a job whose `job:finished` may have been lost; True when it finished and can be imported."""
    job.refresh_from_db()
    if job.status != Status.RUNNING or job.mode != Mode.SNAPSHOT or not job.shoptet_job_id:
        return False
    if job.started_at is not None and timezone.now() >= job.started_at + JOB_TIMEOUT:
        _fail(job, f"Shoptet did not finish job {job.shoptet_job_id} within {_hours(JOB_TIMEOUT)} hours")
        return False
    try:
        return _job_detail(job, ShoptetClient(job.installation)) is not None
    except NotFound:
        _fail(job, f"Shoptet does not know job {job.shoptet_job_id}")
    except TRANSIENT_ERRORS:
        raise
    except ShoptetError as error:
        _fail(job, str(error))
    return False


def import_snapshot(*, job: SyncJob, progress: ProgressCallback | None = None, owner: str | None = None) -> SyncJob:
    """Read the finished job's result file into the tables (all or nothing); a no-op unless it waits for that.

    The run takes the job's lease (`owner` names the run: a task's id, so that its retry takes it again)
    and renews it while it imports; a run that finds another one's live lease leaves without a request.
    """
    owner = owner or leases.new_owner()
    job.refresh_from_db()
    if job.mode != Mode.SNAPSHOT or job.status not in (Status.RUNNING, Status.IMPORTING):
        return job
    if job.status == Status.IMPORTING and job.lease_owner != owner and leases.is_live(job):
        return job
    client = ShoptetClient(job.installation)
    try:
        detail = _job_detail(job, client)
    except NotFound:
        return _fail(job, f"Shoptet does not know job {job.shoptet_job_id}")
    except TRANSIENT_ERRORS:
        raise
    except ShoptetError as error:
        return _fail(job, str(error))
    if detail is None:
        return job
    status = str(detail.get("status"))
    if status == "expired":
        return _restart(job, f"Shoptet's job {job.shoptet_job_id} expired before its result was read")
    if status != "completed":
        log = detail.get("log") or "no log"
        return _fail(job, f"Shoptet's job {job.shoptet_job_id} ended {status}: {log}")
    url = detail.get("resultUrl")
    if not isinstance(url, str) or not url:
        return _fail(job, f"Shoptet's job {job.shoptet_job_id} completed without a result file")
    valid_until = moment(detail.get("validUntil"))
    if valid_until is not None and valid_until <= timezone.now():
        return _restart(job, f"the result of job {job.shoptet_job_id} expired at {valid_until.isoformat()}")
    now = timezone.now()
    with transaction.atomic():
        # The lease is taken in one UPDATE: of two runs at once, the second finds the first's lease and leaves.
        free = SyncJob.objects.select_for_update(skip_locked=True).filter(
            leases.takeable(owner, now), pk=job.pk, status__in=[Status.RUNNING, Status.IMPORTING]
        )
        claimed = SyncJob.objects.filter(pk__in=list(free.values_list("pk", flat=True))).update(
            **leases.lease_fields(owner, now),
            status=Status.IMPORTING,
            result_url=url,
            valid_until=valid_until,
            shoptet_created_at=moment(detail.get("creationTime")),
            shoptet_completed_at=moment(detail.get("completionTime")),
            next_poll_at=None,
            updated_at=timezone.now(),
        )
    job.refresh_from_db()
    if not claimed:
        return job
    try:
        with leases.Heartbeat(job.pk, owner) as heartbeat:
            return _import_result(job, client, url, progress, heartbeat)
    except leases.LeaseLost:
        logger.warning("snapshot import given up: another run took the job over job=%s", job.pk)
        job.refresh_from_db()
        return job
    except remote.ResultGone as error:
        return _restart(job, str(error))
    except remote.ResultFileError as error:
        return _fail(job, str(error))


def _import_result(
    job: SyncJob, client: ShoptetClient, url: str, progress: ProgressCallback | None, heartbeat: leases.Heartbeat
) -> SyncJob:
    resource = resource_named(job.resource)
    owner = heartbeat.owner
    with transaction.atomic():
        # No lock on the job's row: the heartbeat renews the lease on it from its own connection. The
        # lease is checked as the import goes and once more, under the row's lock, before the commit.
        locked = SyncJob.objects.filter(pk=job.pk, status=Status.IMPORTING, lease_owner=owner).first()
        if locked is None:
            return job
        full_at = (locked.shoptet_created_at or locked.created_at) if locked.change_time_from is None else None

        def import_download(direct: bool) -> ImportCounts:
            with remote.open_result(url, session=client.session) as lines:
                return importer.import_lines(
                    installation=locked.installation,
                    resource=resource,
                    lines=lines,
                    full_snapshot_at=full_at,
                    progress=_checking_lease(heartbeat, _reporter(progress, lines)),
                    direct=direct,
                )

        try:
            counts = import_download(direct=True)
        except importer.DirectImportConflict as conflict:
            _log_direct_conflict(locked.installation, resource, conflict)
            counts = import_download(direct=False)
        _advance_cursor(locked.installation, resource.name, locked.created_at - CURSOR_OVERLAP)
        finished = SyncJob.objects.filter(pk=locked.pk, status=Status.IMPORTING, lease_owner=owner).update(
            **leases.released(),
            status=Status.COMPLETED,
            error="",
            finished_at=timezone.now(),
            received=counts.received,
            imported=counts.imported,
            skipped=counts.skipped,
            deleted=counts.deleted,
            updated_at=timezone.now(),
        )
        if not finished:  # taken for dead meanwhile: roll everything back, the other run imports
            raise leases.LeaseLost(f"sync job {locked.pk}: the lease went to another run")
        locked.refresh_from_db()
    logger.info(
        "snapshot imported eshop_id=%s resource=%s job=%s received=%s imported=%s skipped=%s deleted=%s",
        locked.installation.eshop_id,
        locked.resource,
        locked.pk,
        counts.received,
        counts.imported,
        counts.skipped,
        counts.deleted,
    )
    return locked


def import_file(
    *,
    installation: Installation,
    resource: Resource,
    stream: IO[bytes],
    total_bytes: int | None = None,
    progress: ProgressCallback | None = None,
) -> ImportCounts:
    """Import a gzip JSON Lines file (a saved result file) into the tables, all or nothing.

    Raises ResultFileError, changing nothing, when the file is not a complete gzip JSON Lines file.
    """

    def import_stream(direct: bool) -> ImportCounts:
        lines = remote.ResultLines(stream, total_bytes=total_bytes)
        return importer.import_lines(
            installation=installation,
            resource=resource,
            lines=lines,
            progress=_reporter(progress, lines),
            direct=direct,
        )

    try:
        counts = import_stream(direct=stream.seekable())
    except importer.DirectImportConflict as conflict:
        _log_direct_conflict(installation, resource, conflict)
        stream.seek(0)
        counts = import_stream(direct=False)
    logger.info(
        "file imported eshop_id=%s resource=%s received=%s imported=%s skipped=%s",
        installation.eshop_id,
        resource.name,
        counts.received,
        counts.imported,
        counts.skipped,
    )
    return counts


def _checking_lease(heartbeat: leases.Heartbeat, progress: Callable[[int], None] | None) -> Callable[[int], None]:
    """Stop an import whose lease went to another run at its next progress report."""

    def report(documents: int) -> None:
        heartbeat.check()
        if progress is not None:
            progress(documents)

    return report


def _log_direct_conflict(installation: Installation, resource: Resource, conflict: Exception) -> None:
    logger.info(
        "fresh import met an existing code, read again through staging eshop_id=%s resource=%s error=%s",
        installation.eshop_id,
        resource.name,
        str(conflict).splitlines()[0][:300],
    )


def _reporter(progress: ProgressCallback | None, lines: remote.ResultLines) -> Callable[[int], None] | None:
    if progress is None:
        return None
    return lambda documents: progress(documents, lines.compressed_bytes, lines.total_bytes)


def _job_detail(job: SyncJob, client: ShoptetClient) -> dict[str, Any] | None:
    """The job's detail once Shoptet finished it; None while unfinished (each such answer counts as a poll)."""
    assert job.shoptet_job_id  # noqa: S101 - only running jobs get here
    deadline = (job.started_at or timezone.now()) + JOB_TIMEOUT
    if job.polls >= MAX_JOB_POLLS:
        SyncJob.objects.filter(pk=job.pk).update(next_poll_at=deadline)
        return None
    try:
        detail = remote.get_job(client, job.shoptet_job_id)
    except Forbidden as error:
        if error.error_code != "job-detail-try-counter-exceeded-limit":
            raise
        SyncJob.objects.filter(pk=job.pk).update(polls=MAX_JOB_POLLS, next_poll_at=deadline)
        return None
    if detail.get("status") in remote.UNFINISHED_JOB_STATUSES:
        polls = job.polls + 1
        next_poll = min(timezone.now() + POLL_DELAYS[min(polls, len(POLL_DELAYS) - 1)], deadline)
        SyncJob.objects.filter(pk=job.pk).update(polls=F("polls") + 1, next_poll_at=next_poll)
        job.polls = polls
        return None
    return detail


def _restart(job: SyncJob, reason: str) -> SyncJob:
    """The result is gone: ask Shoptet for a new job under the same SyncJob."""
    if job.restarts >= MAX_RESTARTS:
        return _fail(job, f"{reason}; gave up after {MAX_RESTARTS} new jobs")
    restarted = SyncJob.objects.filter(pk=job.pk, status__in=[Status.RUNNING, Status.IMPORTING]).update(
        status=Status.REQUESTED,
        shoptet_job_id="",
        result_url="",
        valid_until=None,
        polls=0,
        next_poll_at=None,
        restarts=F("restarts") + 1,
        **leases.released(),
        note=reason[:255],
        enqueued_at=timezone.now(),
        updated_at=timezone.now(),
    )
    logger.warning("snapshot restarted job=%s reason=%s", job.pk, reason)
    job.refresh_from_db()
    return start_snapshot(job=job) if restarted else job


# ---------------------------------------------------------------------------
# /changes
# ---------------------------------------------------------------------------


def sync_changes(*, job: SyncJob, progress: Callable[[int], None] | None = None, resume: bool = False) -> SyncJob:
    """Apply every change since the cursor, then move the cursor; too old a cursor starts a snapshot instead.

    Only a requested job is claimed, so a run never goes on in two workers at once (a redelivered task, the
    relay and a retry); a transient failure hands the job back as requested, for the task's retry. A run
    the database interrupted could not hand it back: `resume` takes its own running job over again.
    """
    claimable = [Status.REQUESTED, Status.RUNNING] if resume else [Status.REQUESTED]
    owner, now = leases.new_owner(), timezone.now()
    claimed = SyncJob.objects.filter(pk=job.pk, mode=Mode.CHANGES, status__in=claimable).update(
        **leases.lease_fields(owner, now), status=Status.RUNNING, started_at=now, updated_at=now
    )
    job.refresh_from_db()
    if not claimed:
        return job
    try:
        # The lease tells the relay the run is alive; a dead worker's run is handed to a new one once it lapses.
        with leases.Heartbeat(job.pk, owner):
            return _read_changes(job, progress)
    except TRANSIENT_ERRORS:
        _release(job)
        raise  # the task retries; the cursor has not moved


def _read_changes(job: SyncJob, progress: Callable[[int], None] | None) -> SyncJob:
    installation = job.installation
    if not installation.is_active:
        return _fail(job, f"e-shop {installation.eshop_id} is {installation.status}: not synced")
    if not toggles.resource_enabled(installation, job.resource):
        return _complete(job, ImportCounts(), note="switched off in the settings: not read")
    resource = resource_named(job.resource)
    started = timezone.now()
    cursor = SyncCursor.objects.filter(installation=installation, resource=resource.name).first()
    since = cursor.changes_from if cursor is not None else None
    if since is None:
        if _in_flight(installation, resource.name, Mode.SNAPSHOT) is not None:
            return _complete(job, ImportCounts(), note="a snapshot is running; changes are read after it")
        _advance_cursor(installation, resource.name, started - CURSOR_OVERLAP)
        return _complete(job, ImportCounts(), note="first run: changes are read from now on")
    if since < started - (CHANGES_WINDOW - CHANGES_SAFETY):
        snapshot = _catch_up_snapshot(installation, resource, since=since)
        note = f"cursor older than {CHANGES_WINDOW.days} days: incremental snapshot, job {snapshot.pk}"
        return _complete(job, ImportCounts(), note=note)
    try:
        counts = _apply_changes(ShoptetClient(installation), installation, resource, since, progress)
    except TRANSIENT_ERRORS:
        raise
    except ShoptetError as error:
        return _fail(job, str(error))
    _advance_cursor(installation, resource.name, started - CURSOR_OVERLAP)
    return _complete(job, counts)


def _release(job: SyncJob) -> None:
    now = timezone.now()
    SyncJob.objects.filter(pk=job.pk, status=Status.RUNNING).update(
        **leases.released(), status=Status.REQUESTED, enqueued_at=now, updated_at=now
    )


def _catch_up_snapshot(installation: Installation, resource: Resource, *, since: datetime) -> SyncJob:
    try:
        snapshot = request_sync(
            installation=installation,
            resource=resource.name,
            mode=Mode.SNAPSHOT,
            cause="changes cursor older than Shoptet's window",
            change_time_from=since,
        )
    except SyncRunning as running:
        snapshot = running.job
    return start_snapshot(job=snapshot)


def _apply_changes(
    client: ShoptetClient,
    installation: Installation,
    resource: Resource,
    since: datetime,
    progress: Callable[[int], None] | None,
) -> ImportCounts:
    counts = ImportCounts()
    batch: list[dict[str, Any]] = []
    for change in remote.changes(client, resource.name, since, per_page=resource.changes_per_page):
        counts.received += 1
        batch.append(change)
        if len(batch) >= CHANGES_BATCH:
            _apply_batch(client, installation, resource, batch, counts)
            batch = []
            if progress is not None:
                progress(counts.received)
    _apply_batch(client, installation, resource, batch, counts)
    if progress is not None:
        progress(counts.received)
    return counts


def _apply_batch(
    client: ShoptetClient,
    installation: Installation,
    resource: Resource,
    batch: list[dict[str, Any]],
    counts: ImportCounts,
) -> None:
    """Fetch what we do not have yet: most changes already arrived by webhook and are skipped."""
    since = toggles.import_since(installation)
    codes = [change.get("code") for change in batch if isinstance(change.get("code"), str) and change.get("code")]
    stored = {
        code: (change_time, deleted_at)
        for code, change_time, deleted_at in resource.model._default_manager.filter(
            installation=installation, code__in=codes
        ).values_list("code", "change_time", "deleted_at")
    }
    for change in batch:
        code = change.get("code")
        if not isinstance(code, str) or not code:
            continue
        changed = moment(change.get("changeTime"))
        known = stored.get(code)
        if change.get("changeType") == "delete":
            if known is None or known[1] is not None:
                counts.skipped += 1
                continue
        elif known is not None and known[1] is None and _covers(known[0], changed):
            counts.skipped += 1
            continue
        _count(
            counts,
            refresh_document(client=client, installation=installation, resource=resource, code=code, since=since),
        )


def _covers(stored: datetime | None, changed: datetime | None) -> bool:
    return stored is not None and changed is not None and stored >= changed


# ---------------------------------------------------------------------------
# Single documents: webhooks and changes
# ---------------------------------------------------------------------------

IMPORTED, SKIPPED, DELETED, ABSENT, FAILED = "imported", "skipped", "deleted", "absent", "failed"


def refresh_document(
    *, client: ShoptetClient, installation: Installation, resource: Resource, code: str, since: date | None
) -> str:
    """Fetch one document and store it; a 404 confirms a deletion. Returns what happened.

    `since` is the e-shop's import-from date (toggles.import_since), read once by the caller."""
    try:
        document = resource.fetch(client, code)
    except NotFound:
        return DELETED if mark_deleted(installation=installation, resource=resource, code=code) else ABSENT
    if not document:
        raise TransportError(f"GET /api/{resource.name}/{{code}} answered without the document")
    if not toggles.admits(since, moment(document.get("creationTime"))):
        return SKIPPED  # created before the import-from date: known only now, and not brought in
    return IMPORTED if upsert_document(installation=installation, resource=resource, document=document) else SKIPPED


def upsert_document(*, installation: Installation, resource: Resource, document: dict[str, Any]) -> bool:
    """Store one Shoptet document with its items unless ours is newer; True when it was stored."""
    values = resource.fields(document)
    code = values.pop("code")
    items = items_of(document)
    model = resource.model
    now = timezone.now()
    with transaction.atomic():
        current = model._default_manager.select_for_update().filter(installation=installation, code=code).first()
        if current is None:
            try:
                with transaction.atomic():
                    current = model._default_manager.create(
                        installation=installation, code=code, data=document, synced_at=now, **values
                    )
            except IntegrityError:  # created by a concurrent worker since the look above
                current = model._default_manager.select_for_update().get(installation=installation, code=code)
                if not _replace(current, values, document, now):
                    return False
        elif not _replace(current, values, document, now):
            return False
        item_model = resource.item_model
        item_model._default_manager.filter(**{resource.parent_field: current}).delete()
        item_model._default_manager.bulk_create(
            [item_model(installation=installation, **{resource.parent_field: current}, **item) for item in items]
        )
    return True


def _replace(current: Document, values: dict[str, Any], document: dict[str, Any], now: datetime) -> bool:
    if not current.accepts(values["change_time"]):
        return False
    for name, value in values.items():
        setattr(current, name, value)
    current.data = document
    current.deleted_at = None
    current.synced_at = now
    current.save()
    return True


def mark_deleted(*, installation: Installation, resource: Resource, code: str, at: datetime | None = None) -> bool:
    """Mark a document deleted (Shoptet answered 404 for it); False when there was nothing to mark."""
    marked: int = resource.model._default_manager.filter(
        installation=installation, code=code, deleted_at__isnull=True
    ).update(deleted_at=at or timezone.now())
    return marked > 0


def queue_refresh(*, installation: Installation, resource: Resource, codes: Iterable[str]) -> int:
    """Note documents a webhook named; many events for one code make one fetch. The caller enqueues."""
    now = timezone.now()
    unique = sorted({code for code in codes if isinstance(code, str) and code and len(code) <= 255})
    RefreshRequest.objects.bulk_create(
        [
            RefreshRequest(installation=installation, resource=resource.name, code=code, requested_at=now)
            for code in unique
        ],
        update_conflicts=True,
        unique_fields=["installation", "resource", "code"],
        # A new event resets a running claim: the fetch in progress may have read the older state.
        update_fields=["requested_at", "claim", "claimed_at"],
    )
    return len(unique)


@dataclass
class RefreshOutcome:
    counts: dict[str, int] = field(default_factory=dict)
    more: bool = False


def refresh_pending(
    *,
    installation: Installation,
    resource: Resource,
    limit: int = REFRESH_LIMIT,
    claim: str | None = None,
    budget: float = REFRESH_RUN_SECONDS,
) -> RefreshOutcome:
    """Fetch the documents webhooks named, each once; `more` says some were left for another run.

    One run per e-shop and resource at a time (the e-shop's request slots are all it may use anyway): a
    run that finds another at work leaves the requests to it, and the one at work looks for more once it
    has let go. A run stops claiming after `limit` documents or `budget` seconds, so a burst's run hands
    the worker on to the other e-shops' tasks queued meanwhile and comes back at the end of the queue.
    `claim` names the run (its task's id): a run the database interrupted could not release what it had
    claimed, and takes those requests again when it runs once more, instead of waiting for the claim's TTL.
    """
    outcome = RefreshOutcome()
    if not installation.is_active:
        return outcome
    claim = claim or uuid.uuid4().hex
    running = refresh_running_key(installation.pk, resource.name)
    if not cache.add(running, claim, timeout=REFRESH_RUNNING_SECONDS):
        return outcome
    try:
        _refresh_rounds(installation, resource, claim, limit, time.monotonic() + budget, running, outcome)
    finally:
        if cache.get(running) == claim:
            cache.delete(running)
    outcome.more = RefreshRequest.objects.filter(installation=installation, resource=resource.name).exists()
    return outcome


def refresh_running_key(installation_id: int, resource: str) -> str:
    return f"sync:installation:{installation_id}:{resource}:refresh-running"


def _refresh_rounds(
    installation: Installation,
    resource: Resource,
    claim: str,
    limit: int,
    deadline: float,
    running: str,
    outcome: RefreshOutcome,
) -> None:
    client = ShoptetClient(installation)
    since = toggles.import_since(installation)
    processed = 0
    while processed < limit and time.monotonic() < deadline:
        cache.touch(running, REFRESH_RUNNING_SECONDS)
        requests = _claim_refreshes(installation, resource, claim, min(REFRESH_BATCH, limit - processed))
        if not requests:
            return
        done: list[tuple[str, int]] = []
        try:
            _fetch_claimed(client, installation, resource, since, requests, done)
        finally:
            fetched = {request_pk for _, request_pk in done}
            RefreshRequest.objects.filter(pk__in=fetched, claim=claim).delete()
            # Whatever was not fetched is free for the retry at once, not only when the claim expires.
            left = [request.pk for request in requests if request.pk not in fetched]
            if left:
                RefreshRequest.objects.filter(pk__in=left, claim=claim).update(claim="", claimed_at=None)
        for result, _ in done:
            outcome.counts[result] = outcome.counts.get(result, 0) + 1
        processed += len(done)


def _fetch_claimed(
    client: ShoptetClient,
    installation: Installation,
    resource: Resource,
    since: date | None,
    requests: list[RefreshRequest],
    done: list[tuple[str, int]],
) -> None:
    """Fetch and store each claimed document, adding (result, request id) to `done` for each one stored.

    Up to the e-shop's request slots run in parallel, each lane on a client and a database connection of
    its own (closed when the lane ends). Inside a transaction the fetches stay on this connection, which
    alone sees what the transaction wrote. A lane's error is raised once every lane has stopped, with
    what the others stored already in `done`.
    """
    lanes = min(settings.SHOPTET_TOKEN_CONCURRENCY, len(requests))
    if lanes <= 1 or transaction.get_connection().in_atomic_block:
        _fetch_lane(client, installation, resource, since, requests, done)
        return
    results: list[list[tuple[str, int]]] = [[] for _ in range(lanes)]

    def lane(index: int) -> None:
        try:
            _fetch_lane(
                ShoptetClient(installation), installation, resource, since, requests[index::lanes], results[index]
            )
        finally:
            db_connection.close()

    with ThreadPoolExecutor(lanes, thread_name_prefix="refresh") as pool:
        futures = [pool.submit(lane, index) for index in range(lanes)]
    for lane_results in results:
        done.extend(lane_results)
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error


def _fetch_lane(
    client: ShoptetClient,
    installation: Installation,
    resource: Resource,
    since: date | None,
    requests: list[RefreshRequest],
    done: list[tuple[str, int]],
) -> None:
    for request in requests:
        try:
            result = refresh_document(
                client=client, installation=installation, resource=resource, code=request.code, since=since
            )
        except TRANSIENT_ERRORS:
            raise
        except ShoptetError as error:
            # Asking again will not help (no rights, installation gone): the hourly /changes read
            # brings the document once Shoptet answers for it again.
            logger.warning(
                "refresh dropped eshop_id=%s resource=%s code=%s error=%s",
                installation.eshop_id,
                resource.name,
                request.code,
                error,
            )
            result = FAILED
        done.append((result, request.pk))


def _claim_refreshes(installation: Installation, resource: Resource, claim: str, size: int) -> list[RefreshRequest]:
    now = timezone.now()
    with transaction.atomic():
        pks = list(
            RefreshRequest.objects.select_for_update(skip_locked=True)
            .filter(installation=installation, resource=resource.name)
            .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - REFRESH_CLAIM_TTL) | Q(claim=claim))
            .order_by("requested_at", "pk")
            .values_list("pk", flat=True)[:size]
        )
        RefreshRequest.objects.filter(pk__in=pks).update(claim=claim, claimed_at=now)
    return list(RefreshRequest.objects.filter(pk__in=pks, claim=claim).order_by("requested_at", "pk"))


# ---------------------------------------------------------------------------
# Relay: work whose task was lost, jobs whose job:finished did not come
# ---------------------------------------------------------------------------


@dataclass
class Relay:
    polls: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    changes: list[int] = field(default_factory=list)
    imports: list[int] = field(default_factory=list)
    refreshes: list[tuple[int, str]] = field(default_factory=list)


@transaction.atomic
def claim_due_work(*, now: datetime | None = None) -> Relay:
    """Jobs to poll, and work enqueued long ago that never ran (broker flushed): claim it to enqueue again."""
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
    # A suspended e-shop's refreshes wait for addon:approve, which reads /changes anyway.
    stale_refreshes = RefreshRequest.objects.filter(installation__status=Installation.Status.ACTIVE).filter(
        Q(claimed_at__isnull=True, requested_at__lt=now - REFRESH_STALE) | Q(claimed_at__lt=now - REFRESH_CLAIM_TTL)
    )
    pairs = sorted(set(stale_refreshes.values_list("installation_id", "resource")))
    # A live run works through its e-shop's requests oldest first; they only wait their turn.
    running = cache.get_many([refresh_running_key(*pair) for pair in pairs])
    relay.refreshes = []
    for installation_id, resource in pairs:
        if refresh_running_key(installation_id, resource) in running:
            stale_refreshes = stale_refreshes.exclude(installation_id=installation_id, resource=resource)
        else:
            relay.refreshes.append((installation_id, resource))
    stale_refreshes.update(requested_at=now, claim="", claimed_at=None)
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


# ---------------------------------------------------------------------------
# Job bookkeeping
# ---------------------------------------------------------------------------


def fail_job(*, job: SyncJob, error: str) -> SyncJob:
    """Give up on a job (retries exhausted, time limit). A `/changes` run is retried later by a new run;
    any other job stays failed until somebody retries it."""
    return _fail(job, error)


def _fail(job: SyncJob, error: str) -> SyncJob:
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
    seconds = get_exponential_backoff_interval(
        factor=int(RETRY_FACTOR.total_seconds()),
        retries=failures - 1,
        maximum=int(RETRY_MAX.total_seconds()),
        full_jitter=False,
    )
    return timedelta(seconds=seconds)


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


def _complete(job: SyncJob, counts: ImportCounts, *, note: str = "") -> SyncJob:
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


def _count(counts: ImportCounts, result: str) -> None:
    if result == IMPORTED:
        counts.imported += 1
    elif result == DELETED:
        counts.deleted += 1
    else:
        counts.skipped += 1


def _advance_cursor(installation: Installation, resource: str, moment_: datetime) -> None:
    with transaction.atomic():
        cursor, _ = SyncCursor.objects.select_for_update().get_or_create(installation=installation, resource=resource)
        if cursor.changes_from is None or moment_ > cursor.changes_from:
            cursor.changes_from = moment_
            cursor.save()


def _hours(duration: timedelta) -> int:
    return int(duration.total_seconds() // 3600)
