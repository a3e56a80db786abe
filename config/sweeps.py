"""Periodic sweeps over every installation, spread over their period in slices.

Beat runs each sweep every `SWEEP_TICK`; a tick takes only the installations whose `pk % slots` is the
tick's slot, where `slots` is `period / tick`, or fewer when so few installations exist that a tick would
take less than `SWEEP_MIN_BATCH` of them (a few e-shops are all checked in one tick, as before). Every
installation is thus visited once per period, a tick enqueues about `installations / slots` tasks, and the
Shoptet calls they make are spread over the period instead of landing in one minute.

The slot comes from the clock, not from stored state: a restarted beat resumes where the clock says. When
the number of slots changes (the population crossed a multiple of SWEEP_MIN_BATCH), an installation may
wait up to one more period, once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

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
