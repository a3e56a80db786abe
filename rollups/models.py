"""Hourly statistics kept up to date by a periodic task, so that the dashboard never scans the logs it draws."""

from __future__ import annotations

from django.db import models


class HourlyStat(models.Model):
    """One figure of one UTC hour: `series` says what is counted, `label` which part of it (a status, a bucket)."""

    hour = models.DateTimeField()
    series = models.CharField(max_length=32)
    label = models.CharField(max_length=128, blank=True)
    value = models.FloatField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["series", "hour", "label"], name="hourly_stat_unique"),
        ]
        indexes = [models.Index(fields=["hour"], name="hourly_stat_hour")]

    def __str__(self) -> str:
        return f"{self.series} {self.label} {self.hour:%Y-%m-%d %H}:00 = {self.value}"


class Total(models.Model):
    """A figure counted since the platform began, never pruned: what /metrics reports as a counter."""

    series = models.CharField(max_length=32)
    label = models.CharField(max_length=128, blank=True)
    value = models.FloatField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["series", "label"], name="total_unique")]

    def __str__(self) -> str:
        return f"{self.series} {self.label} = {self.value}"


class Watermark(models.Model):
    """How far the rollup has read one source: the last primary key counted, and the counter totals last seen."""

    source = models.CharField(max_length=32, unique=True)
    last_id = models.BigIntegerField(default=0)
    counters = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"{self.source} up to #{self.last_id}"
