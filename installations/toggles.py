"""What the e-shop's settings allow the sync to do: which resources are on, and from which day documents count.

Read by the sync and the webhook registrations at their entry points; every read is scoped to one installation.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time

from django.utils import timezone

from installations.models import AddonSettings, Installation, SettingsChange

# The webhook events that belong to each resource; other events (job:finished, eshop:…) are always wanted.
EVENT_PREFIXES = {"orders": "order:", "invoices": "invoice:"}


def _settings(installation: Installation) -> AddonSettings | None:
    return AddonSettings.objects.filter(installation=installation).first()


def resource_enabled(installation: Installation, resource: str) -> bool:
    """Whether the e-shop's admin wants `resource` synced; on until the settings say otherwise."""
    stored = _settings(installation)
    return stored is None or stored.syncs(resource)


def import_since(installation: Installation) -> date | None:
    """The first day whose documents are imported; None: every document."""
    stored = _settings(installation)
    return stored.import_since if stored is not None else None


def day_start(day: date) -> datetime:
    """Midnight at the start of `day`, in the platform's time zone."""
    return timezone.make_aware(datetime.combine(day, time.min))


def admits(since: date | None, created: datetime | None) -> bool:
    """Whether a document created at `created` is one an e-shop importing from `since` (its
    `import_since`, read once per run of many documents) brings in; an unknown creation time is."""
    return since is None or created is None or created >= day_start(since)


def wanted_events(installation: Installation, events: Iterable[str]) -> list[str]:
    """`events` without those of the resources switched off."""
    off = [prefix for resource, prefix in EVENT_PREFIXES.items() if not resource_enabled(installation, resource)]
    return [event for event in events if not any(event.startswith(prefix) for prefix in off)]


def switched_off_at(installation: Installation, resource: str) -> datetime | None:
    """When `resource` was last switched off, from the settings history."""
    change = (
        SettingsChange.objects.filter(installation=installation, field=f"sync_{resource}", new_value="false")
        .order_by("-created_at", "-id")
        .first()
    )
    return change.created_at if change is not None else None
