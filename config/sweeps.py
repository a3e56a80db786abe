"""Periodic sweeps over every installation, spread over their period in slices.

Beat runs each sweep every `SWEEP_TICK`; a tick takes only the installations whose `pk % slots` is the
tick's slot, where `slots` is `period / tick`, or fewer when so few installations exist that a tick would
take less than `SWEEP_MIN_BATCH` of them (a few e-shops are all checked in one tick, as before). Every
installation is thus visited once per period, a tick enqueues about `installations / slots` tasks, and the
Shoptet calls they make are spread over the period instead of landing in one minute.

A tick sends its tasks through `send_each`: a slice of more than FAN_OUT_CHUNK installations goes out as one
`send_chunk` task per chunk, which sends the chunk's tasks from a worker, so the tick itself publishes a
handful of messages whatever the population (each publish costs about a millisecond).

The slot comes from the clock, not from stored state: a restarted beat resumes where the clock says. When
the number of slots changes (the population crossed a multiple of SWEEP_MIN_BATCH), an installation may
wait up to one more period, once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery import Task, shared_task
from django.conf import settings
from django.db.models import F, QuerySet, Value
from django.db.models.functions import Mod
from django.utils import timezone

from installations.models import Installation


@dataclass(frozen=True)
class Slice:
    """One tick's share of a sweep: the installations with `pk % slots == slot`."""

    slot: int
    slots: int

    def of(self, installations: QuerySet[Installation]) -> QuerySet[Installation]:
        if self.slots <= 1:
            return installations
        slot_of_each = installations.alias(sweep_slot=Mod(F("pk"), Value(self.slots)))
        return slot_of_each.filter(**{"sweep_slot": self.slot})


EVERYTHING = Slice(slot=0, slots=1)


def slice_at(
    period: timedelta, *, population: int, moment: datetime | None = None, tick: timedelta | None = None
) -> Slice:
    """The slice a sweep of `period` over `population` installations takes at `moment` (now), ticking every
    `tick` (SWEEP_TICK)."""
    tick = tick or settings.SWEEP_TICK
    ticks_per_period = max(1, int(period / tick))
    slots = min(ticks_per_period, max(1, math.ceil(population / settings.SWEEP_MIN_BATCH)))
    ticks_since_epoch = int((moment or timezone.now()).timestamp() // tick.total_seconds())
    return Slice(slot=ticks_since_epoch % slots, slots=slots)


FAN_OUT_CHUNK = 100


def send_each(task: Task, installation_ids: list[int]) -> None:
    """Send `task(installation_id)` for each id: at once for a small slice, through `send_chunk` for a large one."""
    if len(installation_ids) <= FAN_OUT_CHUNK:
        _publish(task, installation_ids)
        return
    with send_chunk.app.producer_or_acquire() as producer:
        for start in range(0, len(installation_ids), FAN_OUT_CHUNK):
            chunk = installation_ids[start : start + FAN_OUT_CHUNK]
            send_chunk.apply_async((task.name, chunk), producer=producer)


@shared_task(bind=True, name="config.sweeps.send_chunk")
def send_chunk(self: Task, task_name: str, installation_ids: list[int]) -> None:
    """One chunk of a sweep's tick: the task of each installation in it."""
    _publish(self.app.tasks[task_name], installation_ids)


def _publish(task: Task, installation_ids: list[int]) -> None:
    # The task's own app, not Celery's "current" one: one producer for the whole slice.
    with task.app.producer_or_acquire() as producer:
        for installation_id in installation_ids:
            task.apply_async((installation_id,), producer=producer)
