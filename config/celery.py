"""The Celery application; configuration lives in settings under the CELERY_ prefix.

Every task that concerns one e-shop logs with its id: a task takes an id (`installation_id`, `job_id`,
`delivery_id`, by the project's convention) and the e-shop behind it is bound for the task's run, so
each record logged inside carries `eshop_id` without every task having to remember it.

Every task, beat's periodic ones included, is a PlatformTask: a database that went away mid-run (a
restart, a failover) makes the run wait a few seconds on a fresh connection and start again, instead of
failing and leaving its work to a lease that expires minutes later.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from contextvars import ContextVar, Token
from typing import Any

from celery import Celery, Task
from celery.signals import after_setup_logger, task_postrun, task_prerun

from config import database, logs

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

logger = logging.getLogger(__name__)


# How many times the current task run has been started again after a database outage.
_database_reruns: ContextVar[int] = ContextVar("database_reruns", default=0)


class PlatformTask(Task):
    """Runs the task again, on a new database connection, while the database is briefly unavailable.

    Every task is safe to run twice, so running it again from the start is always right. The run waits in
    the worker rather than as a countdown message: the database is what every task needs, so nothing
    else could run meanwhile, and the task's own retry count (its Shoptet retries) stays its own.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + database.OUTAGE_PATIENCE_SECONDS
        attempt = 0
        reruns = _database_reruns.set(0)
        try:
            while True:
                try:
                    # self.run, not super().__call__: the worker has pushed this run's request already.
                    return self.run(*args, **kwargs)
                except database.DATABASE_OUTAGE_ERRORS as error:
                    pause = database.outage_backoff_seconds(attempt)
                    if time.monotonic() + pause > deadline or not database.drop_broken_connections():
                        raise
                    logger.warning(
                        "database unavailable task=%s attempt=%s retry_in=%.1fs error=%s",
                        self.name,
                        attempt + 1,
                        pause,
                        f"{type(error).__name__}: {error}".strip()[:300],
                    )
                    time.sleep(pause)
                    attempt += 1
                    _database_reruns.set(attempt)
        finally:
            _database_reruns.reset(reruns)


def rerun_after_database_outage() -> bool:
    """True while the task run is a repeat of one the database interrupted (its claims may still be held)."""
    return _database_reruns.get() > 0


app = Celery("platform", task_cls=PlatformTask)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

_bindings: dict[str, Token[int | None]] = {}


@after_setup_logger.connect
def hide_periodic_ticks(logger: logging.Logger, **_: Any) -> None:
    """Beat's relays tick every few seconds; their routine lines stay out of the worker's and beat's output."""
    from django.conf import settings

    tick_filter = logs.PeriodicTickFilter(
        {str(entry["task"]) for entry in settings.CELERY_BEAT_SCHEDULE.values()},
        show_ticks=settings.LOG_PERIODIC_TASKS,
    )
    for handler in logger.handlers:
        handler.addFilter(tick_filter)


def eshop_of_task(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """The e-shop a task run concerns, from the id it was given; None for fleet-wide tasks."""
    from installations.models import Installation
    from sync.models import SyncJob
    from webhooks.models import WebhookDelivery

    try:
        arguments = inspect.signature(task.run).bind_partial(*args, **kwargs).arguments
    except (TypeError, ValueError):
        return None
    lookups = (
        ("installation_id", Installation.objects.all(), "eshop_id"),
        ("job_id", SyncJob.objects.all(), "installation__eshop_id"),
        ("delivery_id", WebhookDelivery.objects.all(), "eshop_id"),
    )
    for argument, queryset, field in lookups:
        value = arguments.get(argument)
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                eshop_id: int | None = queryset.filter(pk=value).values_list(field, flat=True).first()
            except database.DATABASE_OUTAGE_ERRORS:
                return None  # the run itself waits for the database; its lines go without eshop_id
            return eshop_id
    return None


@task_prerun.connect
def bind_eshop(task_id: str, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], **_: Any) -> None:
    eshop_id = eshop_of_task(task, tuple(args or ()), dict(kwargs or {}))
    if eshop_id is not None:
        _bindings[task_id] = logs.bind(eshop_id)


@task_postrun.connect
def unbind_eshop(task_id: str, **_: Any) -> None:
    binding = _bindings.pop(task_id, None)
    if binding is not None:
        logs.unbind(binding)
