"""Celery tasks for webhooks: an id in, one service call.

Processing retries are scheduled in the delivery row (`next_attempt_at`) and picked up by the relay rather
than held as countdown messages in the broker: they survive a broker flush, and a long countdown on Redis
would outlive the visibility timeout and run twice.
"""

from __future__ import annotations

import logging
from datetime import datetime

from celery import Task, shared_task
from django.conf import settings
from kombu.exceptions import OperationalError

from config import sweeps
from config.retries import TASK_RETRY
from installations.models import Installation
from shoptet_api.errors import TRANSIENT_ERRORS
from webhooks import outbox, processing, recovery, registrations

logger = logging.getLogger(__name__)

PRIORITY_QUEUE = "priority"
BULK_QUEUE = "shoptet"


@shared_task
def process_delivery(delivery_id: int) -> None:
    processing.process_delivery(delivery_id=delivery_id)


@shared_task
def process_batch(installation_id: int, delivery_ids: list[int], lease: str, priority: bool = False) -> None:
    """One e-shop's claimed deliveries; a bulk batch that ends claims the e-shop's next one, if any is due."""
    batch = outbox.Batch(installation_id, delivery_ids, datetime.fromisoformat(lease), priority)
    processing.process_batch(batch=batch)
    if not priority:
        send_batches(outbox.claim_installation_batches(installation_id=installation_id))


@shared_task
def relay_deliveries() -> None:
    """Enqueue what the endpoint stored, one task per e-shop and round; the endpoint never talks to the broker."""
    send_batches(outbox.claim_due_batches())


def send_batches(batches: list[outbox.Batch]) -> None:
    """Priority batches (life cycle, job:finished) go to their own queue, which workers read ahead of the bulk."""
    for index, batch in enumerate(batches):
        try:
            process_batch.apply_async(
                args=(batch.installation_id, batch.delivery_ids, batch.lease.isoformat(), batch.priority),
                queue=PRIORITY_QUEUE if batch.priority else BULK_QUEUE,
            )
        except OperationalError:
            for unsent in batches[index:]:
                outbox.release_batch(unsent)
            raise


@shared_task
def watch_registrations() -> None:
    """This tick's slice of the hourly check (config.sweeps): every installation once per period."""
    share = registrations.watch_slice(settings.REGISTRATION_WATCH_PERIOD)
    sweeps.send_each(reconcile_webhooks, registrations.installations_to_watch(share=share))


@shared_task
def watch_notifications() -> None:
    """This tick's slice of the notification-log recovery (config.sweeps)."""
    share = registrations.watch_slice(settings.NOTIFICATION_WATCH_PERIOD)
    sweeps.send_each(recover_notifications, registrations.installations_to_watch(share=share))


@shared_task(bind=True, max_retries=5)
def reconcile_webhooks(self: Task, installation_id: int) -> None:
    try:
        registrations.reconcile_webhooks(installation=Installation.objects.get(pk=installation_id))
    except TRANSIENT_ERRORS as error:
        raise self.retry(exc=error, countdown=TASK_RETRY.seconds(self.request.retries)) from error


@shared_task(bind=True, max_retries=5)
def recover_notifications(self: Task, installation_id: int) -> None:
    try:
        recovery.recover_notifications(installation=Installation.objects.get(pk=installation_id))
    except TRANSIENT_ERRORS as error:
        raise self.retry(exc=error, countdown=TASK_RETRY.seconds(self.request.retries)) from error


@shared_task
def purge_payloads() -> None:
    purged = recovery.purge_payloads(
        older_than=settings.WEBHOOK_PAYLOAD_RETENTION, ignored_older_than=settings.REJECTED_DELIVERY_RETENTION
    )
    deleted = recovery.delete_rejected_deliveries(older_than=settings.REJECTED_DELIVERY_RETENTION)
    logger.info("webhook payloads purged count=%s rejected deliveries deleted=%s", purged, deleted)
