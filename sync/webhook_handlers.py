"""Webhooks that keep the mirror current: order and invoice events, `job:finished`, and `addon:approve`.

Handlers only note what to do and enqueue it: fetching a mass event's hundreds of orders, or importing
a snapshot, must not hold up the webhook queue.
"""

from __future__ import annotations

from functools import partial

from installations import toggles
from installations.models import Installation
from sync import jobs, refresh, snapshots, tasks
from sync.documents import INVOICES, ORDERS, Resource
from sync.models import SyncJob
from webhooks.registry import WebhookEvent, gather, handles


def _queue_refresh(event: WebhookEvent, resource: Resource) -> None:
    # A batch of events queues its codes in one statement, at its end (webhooks.registry.gather).
    installation = event.installation
    gather(("refresh", installation.pk, resource.name), event.codes, partial(_refresh, installation, resource))


def _refresh(installation: Installation, resource: Resource, codes: list[str]) -> None:
    if not toggles.resource_enabled(installation, resource.name):
        return  # switched off in the settings; the catch-up on switching it on reads what changed meanwhile
    # A delete is confirmed the same way: the fetch answers 404 and the document is marked deleted.
    if refresh.queue_refresh(installation=installation, resource=resource, codes=codes):
        tasks.enqueue_refresh(installation, resource.name)


@handles("order:*")
def refresh_orders(event: WebhookEvent) -> None:
    _queue_refresh(event, ORDERS)


@handles("invoice:*")
def refresh_invoices(event: WebhookEvent) -> None:
    _queue_refresh(event, INVOICES)


@handles("job:finished")
def import_finished_job(event: WebhookEvent) -> None:
    job = snapshots.finished_job(installation=event.installation, shoptet_job_id=event.instance)
    if job is not None:  # not a sync job: another part of the platform started it
        tasks.enqueue(job)


@handles("addon:approve")
def catch_up(event: WebhookEvent) -> None:
    """While suspended the e-shop sent nothing we could act on: read what changed meanwhile."""
    installation = event.installation
    installation.refresh_from_db(fields=["status"])
    if not installation.is_active:  # an approve older than a later suspend or uninstall
        return
    for name in (ORDERS.name, INVOICES.name):
        try:
            job = jobs.request_sync(
                installation=installation, resource=name, mode=SyncJob.Mode.CHANGES, cause="addon:approve"
            )
        except jobs.SyncError:  # already running, or switched off in the settings
            continue
        tasks.enqueue(job)
