"""Snapshots: asking Shoptet for a snapshot job, polling it, and importing its result file (or a saved one).

A result that expired before it was read starts a new Shoptet job for the same SyncJob.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import IO, Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from installations import toggles
from installations.models import Installation
from shoptet_api import jobs as shoptet_jobs
from shoptet_api.client import ShoptetClient, shoptet_time
from shoptet_api.errors import TRANSIENT_ERRORS, Forbidden, NotFound, ShoptetError
from sync import importer, jobs, leases
from sync.documents import Resource, moment, resource_named
from sync.importer import ImportCounts
from sync.jobs import CURSOR_OVERLAP
from sync.models import SyncJob

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

ProgressCallback = Callable[[int, int, int | None], None]  # documents, bytes read, bytes in total (if known)


def start_snapshot(*, job: SyncJob) -> SyncJob:
    """Ask Shoptet for the snapshot job of a requested SyncJob; a no-op for any other state."""
    with transaction.atomic():
        locked = SyncJob.objects.select_for_update().select_related("installation").get(pk=job.pk)
        if locked.status != Status.REQUESTED or locked.mode != Mode.SNAPSHOT:
            return locked
        installation = locked.installation
        if not installation.is_active:
            return jobs.fail_job(
                job=locked, error=f"e-shop {installation.eshop_id} is {installation.status}: not synced"
            )
        if not toggles.resource_enabled(installation, locked.resource):
            return jobs.fail_job(job=locked, error=f"{locked.resource} are switched off in the settings: not synced")
        resource = resource_named(locked.resource)
        params = resource.snapshot_params()
        if locked.change_time_from is not None:
            params["changeTimeFrom"] = shoptet_time(locked.change_time_from)
        params.update(shoptet_jobs.creation_filters(toggles.import_since(installation), locked.creation_time_to))
        try:
            shoptet_job_id = shoptet_jobs.request_snapshot(ShoptetClient(installation), resource.name, params)
        except TRANSIENT_ERRORS:
            raise
        except ShoptetError as error:
            return jobs.fail_job(job=locked, error=f"Shoptet refused the snapshot: {error}")
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
        jobs.fail_job(
            job=job, error=f"Shoptet did not finish job {job.shoptet_job_id} within {_hours(JOB_TIMEOUT)} hours"
        )
        return False
    try:
        return _job_detail(job, ShoptetClient(job.installation)) is not None
    except NotFound:
        jobs.fail_job(job=job, error=f"Shoptet does not know job {job.shoptet_job_id}")
    except TRANSIENT_ERRORS:
        raise
    except ShoptetError as error:
        jobs.fail_job(job=job, error=str(error))
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
        return jobs.fail_job(job=job, error=f"Shoptet does not know job {job.shoptet_job_id}")
    except TRANSIENT_ERRORS:
        raise
    except ShoptetError as error:
        return jobs.fail_job(job=job, error=str(error))
    if detail is None:
        return job
    status = str(detail.get("status"))
    if status == "expired":
        return _restart(job, f"Shoptet's job {job.shoptet_job_id} expired before its result was read")
    if status != "completed":
        log = detail.get("log") or "no log"
        return jobs.fail_job(job=job, error=f"Shoptet's job {job.shoptet_job_id} ended {status}: {log}")
    url = detail.get("resultUrl")
    if not isinstance(url, str) or not url:
        return jobs.fail_job(job=job, error=f"Shoptet's job {job.shoptet_job_id} completed without a result file")
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
    except shoptet_jobs.ResultGone as error:
        return _restart(job, str(error))
    except shoptet_jobs.ResultFileError as error:
        return jobs.fail_job(job=job, error=str(error))


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
            with shoptet_jobs.open_result(url, session=client.session) as lines:
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
        jobs.advance_cursor(
            installation=locked.installation, resource=resource.name, moment=locked.created_at - CURSOR_OVERLAP
        )
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
        lines = shoptet_jobs.ResultLines(stream, total_bytes=total_bytes)
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


def _reporter(progress: ProgressCallback | None, lines: shoptet_jobs.ResultLines) -> Callable[[int], None] | None:
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
        detail = shoptet_jobs.get_job(client, job.shoptet_job_id)
    except Forbidden as error:
        if error.error_code != "job-detail-try-counter-exceeded-limit":
            raise
        SyncJob.objects.filter(pk=job.pk).update(polls=MAX_JOB_POLLS, next_poll_at=deadline)
        return None
    if detail.get("status") in shoptet_jobs.UNFINISHED_JOB_STATUSES:
        polls = job.polls + 1
        next_poll = min(timezone.now() + POLL_DELAYS[min(polls, len(POLL_DELAYS) - 1)], deadline)
        SyncJob.objects.filter(pk=job.pk).update(polls=F("polls") + 1, next_poll_at=next_poll)
        job.polls = polls
        return None
    return detail


def _restart(job: SyncJob, reason: str) -> SyncJob:
    """The result is gone: ask Shoptet for a new job under the same SyncJob."""
    if job.restarts >= MAX_RESTARTS:
        return jobs.fail_job(job=job, error=f"{reason}; gave up after {MAX_RESTARTS} new jobs")
    restarted = SyncJob.objects.filter(pk=job.pk, status__in=[Status.RUNNING, Status.IMPORTING]).update(
        **jobs.NEW_SHOPTET_JOB,
        restarts=F("restarts") + 1,
        **leases.released(),
        note=reason[:255],
        enqueued_at=timezone.now(),
        updated_at=timezone.now(),
    )
    logger.warning("snapshot restarted job=%s reason=%s", job.pk, reason)
    job.refresh_from_db()
    return start_snapshot(job=job) if restarted else job


def _hours(duration: timedelta) -> int:
    return int(duration.total_seconds() // 3600)
