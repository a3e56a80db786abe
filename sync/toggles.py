"""What a change of the e-shop's sync settings sets going: registrations, catch-ups, the missing range."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date, datetime

from django.db import transaction
from django.utils import timezone

from installations import toggles
from installations.models import Installation, SettingsChange
from sync import changes as sync_changes
from sync import jobs as sync_jobs
from sync import tasks
from sync.models import SyncCursor, SyncJob

logger = logging.getLogger(__name__)

TOGGLE_FIELDS = {"sync_orders": "orders", "sync_invoices": "invoices"}


def react_to_settings(*, installation: Installation, changes: Iterable[SettingsChange]) -> None:
    """Act on the stored changes once they are committed; the registration watchdog repeats what fails here."""
    changes = list(changes)
    toggled = [change for change in changes if change.field in TOGGLE_FIELDS]
    if toggled:
        _reconcile_registrations(installation)
    for change in toggled:
        if change.new_value == "true":
            catch_up(installation=installation, resource=TOGGLE_FIELDS[change.field])
    for change in changes:
        if change.field == "import_since":
            import_missing_range(installation=installation, old=_day(change.old_value), new=_day(change.new_value))


def _reconcile_registrations(installation: Installation) -> None:
    # Imported here: webhooks' services read the wanted events from `installations.toggles`, not from us.
    from webhooks import tasks as webhook_tasks

    transaction.on_commit(lambda: webhook_tasks.reconcile_webhooks.delay(installation.pk))


def catch_up(*, installation: Installation, resource: str) -> SyncJob | None:
    """Read what changed while `resource` was off: `/changes` from then, or a snapshot beyond their reach."""
    off_since = toggles.switched_off_at(installation, resource)
    if off_since is None:
        return None
    if off_since < timezone.now() - (sync_changes.CHANGES_WINDOW - sync_changes.CHANGES_SAFETY):
        return _request(installation, resource, SyncJob.Mode.SNAPSHOT, "switched on: off longer than /changes reach")
    _rewind_cursor(installation, resource, off_since)
    return _request(installation, resource, SyncJob.Mode.CHANGES, "switched on: catch-up")


def _rewind_cursor(installation: Installation, resource: str, moment: datetime) -> None:
    """Start the next `/changes` read no later than `moment`; an older cursor already covers it."""
    cursor, created = SyncCursor.objects.get_or_create(
        installation=installation, resource=resource, defaults={"changes_from": moment}
    )
    if not created and (cursor.changes_from is None or cursor.changes_from > moment):
        SyncCursor.objects.filter(pk=cursor.pk).update(changes_from=moment)


def import_missing_range(*, installation: Installation, old: date | None, new: date | None) -> list[SyncJob]:
    """An earlier import-from date: a snapshot of the documents created between the new and the old date."""
    if old is None or (new is not None and new >= old):
        return []  # a later date (or none before): nothing is missing; stored documents stay
    jobs = []
    for resource in TOGGLE_FIELDS.values():
        if not toggles.resource_enabled(installation, resource):
            continue
        job = _request(
            installation,
            resource,
            SyncJob.Mode.SNAPSHOT,
            f"import-from date moved to {new or 'the beginning'}",
            creation_time_to=toggles.day_start(old),
        )
        if job is not None:
            jobs.append(job)
    return jobs


def _request(installation: Installation, resource: str, mode: str, cause: str, **options: datetime) -> SyncJob | None:
    try:
        job = sync_jobs.request_sync(installation=installation, resource=resource, mode=mode, cause=cause, **options)
    except sync_jobs.SyncRunning as running:
        logger.warning(
            "settings change found a sync running eshop_id=%s resource=%s job=%s",
            installation.eshop_id,
            resource,
            running.job.pk,
        )
        return None
    except sync_jobs.SyncError as error:
        logger.warning("settings change could not start a sync eshop_id=%s error=%s", installation.eshop_id, error)
        return None
    tasks.enqueue(job)
    return job


def _day(value: str) -> date | None:
    return date.fromisoformat(value) if value else None
