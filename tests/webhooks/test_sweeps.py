"""The sweeps over every installation fan out in bounded slices that cover everyone within their period."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery.signals import before_task_publish
from django.conf import settings

from config import sweeps
from installations.models import Installation
from sync import jobs as sync_jobs
from sync import tasks as sync_tasks
from sync.documents import RESOURCES
from sync.models import SyncJob
from webhooks import registrations
from webhooks import tasks as webhook_tasks

pytestmark = pytest.mark.django_db

ESHOPS = 600
MIN_BATCH = 5
HOUR_START = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


@pytest.fixture
def many_installations(settings) -> list[int]:  # type: ignore[no-untyped-def]
    settings.SWEEP_MIN_BATCH = MIN_BATCH
    Installation.objects.bulk_create(
        Installation(
            eshop_id=700_000 + number,
            status=Installation.Status.ACTIVE,
            onboarding_status=Installation.Onboarding.DONE,
        )
        for number in range(ESHOPS)
    )
    return sorted(Installation.objects.values_list("pk", flat=True))


def ticks(period: timedelta) -> list[datetime]:
    return [HOUR_START + settings.SWEEP_TICK * number for number in range(int(period / settings.SWEEP_TICK))]


@pytest.mark.parametrize("period_setting", ["REGISTRATION_WATCH_PERIOD", "NOTIFICATION_WATCH_PERIOD"])
def test_the_watchdogs_take_a_bounded_slice_per_tick_and_cover_everyone_within_the_period(
    many_installations: list[int], period_setting: str
) -> None:
    period: timedelta = getattr(settings, period_setting)
    slots = int(period / settings.SWEEP_TICK)
    seen: list[int] = []

    for moment in ticks(period):
        watched = registrations.installations_to_watch(share=registrations.watch_slice(period, moment=moment))
        assert len(watched) <= math.ceil(ESHOPS / slots), moment
        seen.extend(watched)

    assert sorted(seen) == many_installations  # each one exactly once per period


def test_the_changes_reconciliation_takes_a_bounded_slice_per_tick_and_covers_everyone_within_the_hour(
    many_installations: list[int],
) -> None:
    slots = int(settings.CHANGES_SWEEP_PERIOD / settings.SWEEP_TICK)
    covered: set[int] = set()

    for moment in ticks(settings.CHANGES_SWEEP_PERIOD):
        jobs = sync_jobs.request_changes_everywhere(share=sync_jobs.changes_slice(moment=moment))
        installations = {job.installation_id for job in jobs}
        assert len(installations) <= math.ceil(ESHOPS / slots), moment
        assert len(jobs) == len(installations) * len(RESOURCES)
        assert not installations & covered
        covered |= installations

    assert sorted(covered) == many_installations


def test_a_few_installations_are_all_swept_in_one_tick(many_installations: list[int], settings) -> None:  # type: ignore[no-untyped-def]
    settings.SWEEP_MIN_BATCH = ESHOPS

    share = registrations.watch_slice(settings.REGISTRATION_WATCH_PERIOD, moment=HOUR_START)

    assert registrations.installations_to_watch(share=share) == many_installations


def test_a_changes_tick_only_sends_one_task_per_installation_of_its_slice(
    many_installations: list[int], django_assert_max_num_queries: Any
) -> None:
    sent: list[tuple[str, list[Any]]] = []

    def record(sender: str, body: tuple[list[Any], dict[str, Any], Any], **_: Any) -> None:
        sent.append((sender, list(body[0])))

    before_task_publish.connect(record)
    try:
        with django_assert_max_num_queries(4):  # population, the slice's ids, the prune's ids
            sync_tasks.sync_changes_everywhere.apply(throw=True)
    finally:
        before_task_publish.disconnect(record)

    slots = int(settings.CHANGES_SWEEP_PERIOD / settings.SWEEP_TICK)
    assert SyncJob.objects.count() == 0  # the runs are created by the tasks it sent, not in the tick
    assert {name for name, _ in sent} == {"sync.tasks.request_changes"}
    assert 0 < len(sent) <= math.ceil(ESHOPS / slots)
    assert {args[0] for _, args in sent} <= set(many_installations)


def test_a_large_slice_goes_out_in_chunks_that_send_every_installations_task(
    many_installations: list[int],
    settings,  # type: ignore[no-untyped-def]
) -> None:
    settings.SWEEP_MIN_BATCH = ESHOPS  # one tick takes all 600: more than a chunk
    sent: list[tuple[str, list[Any]]] = []

    def record(sender: str, body: tuple[list[Any], dict[str, Any], Any], **_: Any) -> None:
        sent.append((sender, list(body[0])))

    before_task_publish.connect(record)
    try:
        webhook_tasks.watch_notifications.apply(throw=True)
        chunks = list(sent)
        sent.clear()
        for _, (task_name, ids) in chunks:
            sweeps.send_chunk.apply(args=(task_name, ids), throw=True)
    finally:
        before_task_publish.disconnect(record)

    assert len(chunks) == math.ceil(ESHOPS / sweeps.FAN_OUT_CHUNK)
    assert {name for name, _ in chunks} == {"config.sweeps.send_chunk"}
    assert {name for name, _ in sent} == {"webhooks.tasks.recover_notifications"}
    assert sorted(args[0] for _, args in sent) == many_installations
