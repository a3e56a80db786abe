"""Celery tasks for notification e-mails: an id in, one service call, SMTP errors retried with backoff."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Task, shared_task

from config.logs import bound_eshop
from config.retries import Backoff
from notifications import services
from notifications.models import Notification

logger = logging.getLogger(__name__)

SEND_MAX_RETRIES = 5
# Up to 30 s, 60 s, 120 s … at most 10 minutes: an SMTP server that refused one mail may need a while.
SEND_RETRY = Backoff(base=30.0, cap=600.0, jitter=1.0)
# Longer than all retries of one mail (at most five waits of 10 minutes): a mail still retrying is never doubled.
SEND_STALE_AFTER = timedelta(hours=2)


@shared_task(bind=True, max_retries=SEND_MAX_RETRIES)
def send_notification(self: Task, notification_id: int) -> None:
    eshop_id = Notification.objects.filter(pk=notification_id).values_list("installation__eshop_id", flat=True).first()
    with bound_eshop(eshop_id):
        try:
            services.send_notification(notification_id=notification_id)
        except services.DELIVERY_ERRORS as error:
            final = services.is_permanent(error) or self.request.retries >= SEND_MAX_RETRIES
            services.record_failure(notification_id=notification_id, error=error, final=final)
            if not final:
                raise self.retry(exc=error, countdown=SEND_RETRY.seconds(self.request.retries)) from error


@shared_task
def relay_notifications() -> None:
    for notification_id in services.claim_pending(stale_after=SEND_STALE_AFTER):
        send_notification.delay(notification_id)


@shared_task
def notify_silent_webhooks() -> None:
    recorded = services.notify_silent_webhooks()
    logger.info("silent webhooks checked notifications=%s", recorded)
