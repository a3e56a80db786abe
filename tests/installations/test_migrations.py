"""Installations stored before stamps described the current state lose the stamps of states they left."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.utils import timezone

from installations.models import Installation

pytestmark = pytest.mark.django_db

current_state_stamps = importlib.import_module("installations.migrations.0004_current_state_stamps")
STAMPS = ("suspended_at", "uninstalled_at", "terminated_at")


@pytest.mark.parametrize(
    ("status", "kept"),
    [
        ("active", set()),
        ("suspended", {"suspended_at"}),
        ("uninstalled", {"uninstalled_at"}),
        ("terminated", {"uninstalled_at", "terminated_at"}),
    ],
)
def test_only_the_stamps_of_the_current_state_stay(
    installation: Installation, other_installation: Installation, status: str, kept: set[str]
) -> None:
    moment = timezone.now()
    Installation.objects.filter(pk=installation.pk).update(status=status, **dict.fromkeys(STAMPS, moment))
    Installation.objects.filter(pk=other_installation.pk).update(status="active")

    current_state_stamps.clear_stamps_of_left_states(apps, None)

    stamps = Installation.objects.values(*STAMPS).get(pk=installation.pk)
    assert stamps == {name: moment if name in kept else None for name in STAMPS}
    assert Installation.objects.values(*STAMPS).get(pk=other_installation.pk) == dict.fromkeys(STAMPS)
