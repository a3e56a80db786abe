"""Celery tasks for tenants: an id in, one service call, transient Shoptet errors retried with backoff."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Task, shared_task
from django.conf import settings

from config.logs import bound_eshop
from config.retries import TASK_RETRY
from installations import retention, services
from installations.models import Installation
from shoptet_api.errors import TRANSIENT_ERRORS, ShoptetError
from sync import jobs as sync_jobs
from sync import tasks as sync_tasks

logger = logging.getLogger(__name__)

ONBOARDING_MAX_RETRIES = 8
# A claimed onboarding that has not finished after this long was lost (broker flushed): claim it again.
# Longer than all retries of one run together, so a run still retrying is never doubled.
ONBOARDING_STALE_AFTER = timedelta(hours=2)


@shared_task(bind=True, max_retries=ONBOARDING_MAX_RETRIES)
def onboard(self: Task, installation_id: int) -> None:
    installation = Installation.objects.get(pk=installation_id)
    try:
        with bound_eshop(installation.eshop_id):
            services.onboard(installation=installation)
    except TRANSIENT_ERRORS as error:
        if self.request.retries >= ONBOARDING_MAX_RETRIES:
            services.record_onboarding_failure(installation=installation, error=error)
            return
        raise self.retry(exc=error, countdown=TASK_RETRY.seconds(self.request.retries)) from error
    except ShoptetError as error:
        services.record_onboarding_failure(installation=installation, error=error)
    else:
        start_initial_import(installation)


def start_initial_import(installation: Installation) -> None:
    """Once onboarded, import every order and invoice (settings.SYNC_INITIAL_IMPORT); a no-op when done before."""
    installation.refresh_from_db(fields=["status"])
    if settings.SYNC_INITIAL_IMPORT and installation.is_active:
        for job in sync_jobs.request_initial_import(installation=installation):
            sync_tasks.enqueue(job)


@shared_task
def relay_pending_onboarding() -> None:
    for installation_id in services.claim_pending_onboarding(stale_after=ONBOARDING_STALE_AFTER):
        onboard.delay(installation_id)


@shared_task
def purge_ended_tenants() -> None:
    deleted = retention.purge_due()
    logger.info("ended tenants purged rows=%s", deleted)
