"""`manage.py shoptet_sync ESHOP_ID orders|invoices --mode snapshot|changes`: sync now, in this process."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from installations.models import Installation
from sync import changes, jobs, snapshots
from sync.documents import RESOURCES
from sync.management.progress import ProgressBar
from sync.models import SyncJob

# Shoptet answers at most 10 detail requests on an unfinished job: space them out, then wait for the
# platform (job:finished, the relay's polls) to move the job on.
POLL_AFTER_SECONDS = (2, 3, 5, 10, 20, 40, 60, 120, 300, 600)
WATCH_SECONDS = 1.0


class Command(BaseCommand):
    help = (
        "Sync one e-shop's orders or invoices now, in this process: a snapshot (Shoptet's job, then the "
        "import) or the changes since the last run. Shows a progress bar on a terminal."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("eshop_id", type=int, help="Shoptet's e-shop id")
        parser.add_argument("resource", choices=sorted(RESOURCES))
        parser.add_argument("--mode", choices=SyncJob.Mode.values, default=SyncJob.Mode.SNAPSHOT)

    def handle(self, *args: Any, eshop_id: int, resource: str, mode: str, **options: Any) -> None:
        installation = Installation.objects.filter(eshop_id=eshop_id).first()
        if installation is None:
            raise CommandError(f"No installation has e-shop id {eshop_id}.")
        try:
            job = jobs.request_sync(
                installation=installation, resource=resource, mode=mode, cause="manage.py shoptet_sync"
            )
        except jobs.SyncRunning as running:
            raise CommandError(f"{running}; see it in the admin (sync jobs) or wait for it.") from running
        except jobs.SyncError as error:
            raise CommandError(str(error)) from error
        bar = ProgressBar(self.stdout, resource)
        try:
            if mode == SyncJob.Mode.CHANGES:
                job = changes.sync_changes(job=job, progress=bar.documents)
            else:
                job = self._snapshot(job, bar)
        except KeyboardInterrupt:
            bar.finish()
            raise CommandError(f"Interrupted; {job} goes on in the platform.") from None
        bar.finish()
        self._report(job)

    def _snapshot(self, job: SyncJob, bar: ProgressBar) -> SyncJob:
        job = snapshots.start_snapshot(job=job)
        polls = iter(POLL_AFTER_SECONDS)
        next_poll = _after(next(polls))
        while True:
            job.refresh_from_db()
            if job.is_finished:
                return job
            if job.status == SyncJob.Status.REQUESTED:  # the result expired and a new job is due
                job = snapshots.start_snapshot(job=job)
            elif job.status == SyncJob.Status.RUNNING and timezone.now() >= next_poll:
                bar.status(f"waiting for Shoptet's job {job.shoptet_job_id} (poll {job.polls + 1})")
                if snapshots.poll_snapshot(job=job):
                    job = snapshots.import_snapshot(job=job, progress=bar.documents)
                    continue
                next_poll = _after(next(polls, POLL_AFTER_SECONDS[-1]))
            elif job.status == SyncJob.Status.IMPORTING:
                bar.status("a worker is importing the result")
            time.sleep(WATCH_SECONDS)

    def _report(self, job: SyncJob) -> None:
        if job.status == SyncJob.Status.FAILED:
            raise CommandError(f"{job} failed: {job.error}")
        summary = (
            f"{job} completed: {job.received} read, {job.imported} imported, {job.skipped} skipped, "
            f"{job.deleted} marked deleted."
        )
        self.stdout.write(f"{summary} {job.note}".strip())


def _after(seconds: float) -> datetime:
    return timezone.now() + timedelta(seconds=seconds)
