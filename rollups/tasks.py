"""The periodic rollup of the hourly statistics."""

from __future__ import annotations

from celery import shared_task

from rollups import services


@shared_task
def roll_up() -> None:
    services.roll_up()
