"""`/changes` reconciliation: reading every change since the cursor and fetching what we do not have yet.

A cursor older than Shoptet's window is caught up by an incremental snapshot instead.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from installations import toggles
from installations.models import Installation
from shoptet_api import jobs as shoptet_jobs
from shoptet_api.client import ShoptetClient
from shoptet_api.errors import TRANSIENT_ERRORS, ShoptetError
from sync import jobs, leases, snapshots
from sync.documents import Resource, moment, resource_named
from sync.importer import ImportCounts
from sync.jobs import CURSOR_OVERLAP, SyncRunning
from sync.models import SyncCursor, SyncJob
from sync.refresh import DELETED, IMPORTED, refresh_document

Status = SyncJob.Status
Mode = SyncJob.Mode

# `/changes` keeps 30 days of history; a cursor that gets close to that is caught up by a snapshot.
CHANGES_WINDOW = timedelta(days=30)
CHANGES_SAFETY = timedelta(days=1)
CHANGES_BATCH = 200


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
        return jobs.fail_job(job=job, error=f"e-shop {installation.eshop_id} is {installation.status}: not synced")
    if not toggles.resource_enabled(installation, job.resource):
        return jobs.complete_job(job=job, counts=ImportCounts(), note="switched off in the settings: not read")
    resource = resource_named(job.resource)
    started = timezone.now()
    cursor = SyncCursor.objects.filter(installation=installation, resource=resource.name).first()
    since = cursor.changes_from if cursor is not None else None
    if since is None:
        if jobs.in_flight(installation, resource.name, Mode.SNAPSHOT) is not None:
            return jobs.complete_job(
                job=job, counts=ImportCounts(), note="a snapshot is running; changes are read after it"
            )
        jobs.advance_cursor(installation=installation, resource=resource.name, moment=started - CURSOR_OVERLAP)
        return jobs.complete_job(job=job, counts=ImportCounts(), note="first run: changes are read from now on")
    if since < started - (CHANGES_WINDOW - CHANGES_SAFETY):
        snapshot = _catch_up_snapshot(installation, resource, since=since)
        note = f"cursor older than {CHANGES_WINDOW.days} days: incremental snapshot, job {snapshot.pk}"
        return jobs.complete_job(job=job, counts=ImportCounts(), note=note)
    try:
        counts = _apply_changes(ShoptetClient(installation), installation, resource, since, progress)
    except TRANSIENT_ERRORS:
        raise
    except ShoptetError as error:
        return jobs.fail_job(job=job, error=str(error))
    jobs.advance_cursor(installation=installation, resource=resource.name, moment=started - CURSOR_OVERLAP)
    return jobs.complete_job(job=job, counts=counts)


def _release(job: SyncJob) -> None:
    now = timezone.now()
    SyncJob.objects.filter(pk=job.pk, status=Status.RUNNING).update(
        **leases.released(), status=Status.REQUESTED, enqueued_at=now, updated_at=now
    )


def _catch_up_snapshot(installation: Installation, resource: Resource, *, since: datetime) -> SyncJob:
    try:
        snapshot = jobs.request_sync(
            installation=installation,
            resource=resource.name,
            mode=Mode.SNAPSHOT,
            cause="changes cursor older than Shoptet's window",
            change_time_from=since,
        )
    except SyncRunning as running:
        snapshot = running.job
    return snapshots.start_snapshot(job=snapshot)


def _apply_changes(
    client: ShoptetClient,
    installation: Installation,
    resource: Resource,
    since: datetime,
    progress: Callable[[int], None] | None,
) -> ImportCounts:
    counts = ImportCounts()
    batch: list[dict[str, Any]] = []
    for change in shoptet_jobs.changes(client, resource.name, since, per_page=resource.changes_per_page):
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


def _count(counts: ImportCounts, result: str) -> None:
    if result == IMPORTED:
        counts.imported += 1
    elif result == DELETED:
        counts.deleted += 1
    else:
        counts.skipped += 1
