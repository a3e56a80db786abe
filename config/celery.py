"""The Celery application; configuration lives in settings under the CELERY_ prefix.

Every task that concerns one e-shop logs with its id: a task takes an id (`installation_id`, `job_id`,
`delivery_id`, by the project's convention) and the e-shop behind it is bound for the task's run, so
each record logged inside carries `eshop_id` without every task having to remember it.
"""

from __future__ import annotations

import inspect
import logging
import os
from contextvars import Token
from typing import Any

from celery import Celery, Task
from celery.signals import after_setup_logger, task_postrun, task_prerun

from config import logs

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("platform")
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
            eshop_id: int | None = queryset.filter(pk=value).values_list(field, flat=True).first()
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
