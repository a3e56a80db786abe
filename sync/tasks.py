"""Celery tasks for order and invoice sync: an id in, one service call; transient Shoptet errors retried.

Queues are set in CELERY_TASK_ROUTES: imports run on `imports`, on their own workers, so a big snapshot
never delays webhooks; everything that calls Shoptet runs on `shoptet`.
"""

from __future__ import annotations

import logging
from functools import partial

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.core.cache import cache
from django.db import transaction
from kombu.exceptions import OperationalError

from config import sweeps
from config.celery import rerun_after_database_outage
from config.retries import TASK_RETRY
from config.throttling import CACHE_ERRORS
from installations.models import Installation
from shoptet_api.errors import TRANSIENT_ERRORS
from sync import changes, jobs, refresh, snapshots
from sync.documents import resource_named
from sync.models import SyncJob

logger = logging.getLogger(__name__)

MAX_RETRIES = 6
# A queued refresh run outlives this in the queue only when its message was lost (a flushed broker); the
# sync relay sends one for the requests it left, and the next batch may queue one again.
REFRESH_QUEUED_SECONDS = 120
# What sending a refresh run meets when the broker or the cache is away: transient, the relay sends it later.
NOT_SENT: tuple[type[Exception], ...] = (OperationalError, *CACHE_ERRORS)


def enqueue(job: SyncJob) -> None:
    """Send a job to the task that moves it on, once the current transaction commits."""
    if job.status == SyncJob.Status.REQUESTED:
        task = start_snapshot if job.mode == SyncJob.Mode.SNAPSHOT else sync_changes
    elif job.status in (SyncJob.Status.RUNNING, SyncJob.Status.IMPORTING) and job.mode == SyncJob.Mode.SNAPSHOT:
        task = import_snapshot
    elif job.status == SyncJob.Status.RUNNING:
        task = sync_changes
    else:
        return
    transaction.on_commit(partial(task.delay, job.pk))


def enqueue_refresh(installation: Installation, resource: str) -> None:
    """Make sure a refresh run will fetch what is queued for the e-shop, once the transaction commits."""
    transaction.on_commit(partial(_schedule_or_leave_to_relay, installation.pk, resource))


def _schedule_or_leave_to_relay(installation_id: int, resource: str) -> None:
    try:
        schedule_refresh(installation_id, resource)
    except NOT_SENT as error:
        # The requests are stored: the sync relay sends a run for them once the broker and cache are back.
        logger.warning(
            "refresh run not sent installation=%s resource=%s error=%s", installation_id, resource, type(error).__name__
        )


def schedule_refresh(installation_id: int, resource: str) -> None:
    """Send a refresh run unless one is waiting in the queue already: a burst of batches then leaves one
    message per e-shop and resource in the queue, not one per batch ahead of every other e-shop."""
    queued = _refresh_queued_key(installation_id, resource)
    if not cache.add(queued, "1", timeout=REFRESH_QUEUED_SECONDS):
        return
    try:
        refresh_documents.delay(installation_id, resource)
    except OperationalError:
        cache.delete(queued)
        raise


def _refresh_queued_key(installation_id: int, resource: str) -> str:
    return f"sync:installation:{installation_id}:{resource}:refresh-queued"


def _retry_or_fail(task: Task, job_id: int, error: Exception) -> None:
    """Retry a transient failure with backoff; after the last retry the job fails with the error."""
    if task.request.retries >= MAX_RETRIES:
        jobs.fail_job(job=SyncJob.objects.get(pk=job_id), error=f"gave up after {MAX_RETRIES} retries: {error}")
        return
    raise task.retry(exc=error, countdown=TASK_RETRY.seconds(task.request.retries))


@shared_task(bind=True, max_retries=MAX_RETRIES)
def start_snapshot(self: Task, job_id: int) -> None:
    try:
        snapshots.start_snapshot(job=SyncJob.objects.get(pk=job_id))
    except TRANSIENT_ERRORS as error:
        _retry_or_fail(self, job_id, error)


@shared_task(bind=True, max_retries=MAX_RETRIES)
def poll_snapshot(self: Task, job_id: int) -> None:
    try:
        finished = snapshots.poll_snapshot(job=SyncJob.objects.get(pk=job_id))
    except TRANSIENT_ERRORS as error:
        raise self.retry(exc=error, countdown=TASK_RETRY.seconds(self.request.retries)) from error
    if finished:
        import_snapshot.delay(job_id)


@shared_task(bind=True, max_retries=MAX_RETRIES)
def import_snapshot(self: Task, job_id: int) -> None:
    try:
        snapshots.import_snapshot(job=SyncJob.objects.get(pk=job_id), owner=_claim_of(self))
    except TRANSIENT_ERRORS as error:
        _retry_or_fail(self, job_id, error)
    except SoftTimeLimitExceeded:
        jobs.fail_job(job=SyncJob.objects.get(pk=job_id), error="the import exceeded the task time limit")


@shared_task(bind=True, max_retries=MAX_RETRIES)
def sync_changes(self: Task, job_id: int) -> None:
    try:
        changes.sync_changes(job=SyncJob.objects.get(pk=job_id), resume=rerun_after_database_outage())
    except TRANSIENT_ERRORS as error:
        _retry_or_fail(self, job_id, error)


@shared_task(bind=True, max_retries=MAX_RETRIES)
def refresh_documents(self: Task, installation_id: int, resource: str) -> None:
    # Out of the queue: requests queued from now on need a run of their own (or this one's `more`).
    cache.delete(_refresh_queued_key(installation_id, resource))
    installation = Installation.objects.get(pk=installation_id)
    try:
        outcome = refresh.refresh_pending(
            installation=installation, resource=resource_named(resource), claim=_claim_of(self)
        )
    except TRANSIENT_ERRORS as error:
        raise self.retry(exc=error, countdown=TASK_RETRY.seconds(self.request.retries)) from error
    if outcome.more:
        _schedule_or_leave_to_relay(installation_id, resource)


def _claim_of(task: Task) -> str | None:
    """The run's task id, as a refresh claim (32 characters): the same again when the run is repeated."""
    return task.request.id.replace("-", "")[:32] if task.request.id else None


@shared_task
def relay_sync_work() -> None:
    relay = jobs.claim_due_work()
    for job_id in relay.polls:
        poll_snapshot.delay(job_id)
    for job_id in relay.starts:
        start_snapshot.delay(job_id)
    for job_id in relay.changes:
        sync_changes.delay(job_id)
    for job_id in relay.imports:
        import_snapshot.delay(job_id)
    for installation_id, resource in refresh.claim_stale_refreshes():
        refresh_documents.delay(installation_id, resource)


@shared_task
def sync_changes_everywhere() -> None:
    """This tick's slice of the `/changes` reconciliation (config.sweeps): each installation once per period.

    The tick only sends one task per installation of its slice, so it stays short with 10,000 e-shops;
    the runs are created by those tasks."""
    sweeps.send_each(request_changes, jobs.installations_to_reconcile(share=jobs.changes_slice()))
    jobs.prune_jobs()


@shared_task
def request_changes(installation_id: int) -> None:
    installation = Installation.objects.get(pk=installation_id)
    if installation.is_active:
        for job in jobs.request_changes(installation=installation):
            sync_changes.delay(job.pk)  # committed already: request_sync commits each run it creates
