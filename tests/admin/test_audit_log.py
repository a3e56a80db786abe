"""Every change made through the admin is in the audit log (Django's LogEntry), which nobody can edit."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.test import Client
from django.urls import reverse

from installations.models import Installation
from sync.models import SyncJob
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db


def entries(model: str) -> list[tuple[str, int, str | None, str]]:
    rows = LogEntry.objects.filter(content_type__model=model).select_related("user").order_by("pk")
    return [(row.user.username, row.action_flag, row.object_id, row.get_change_message()) for row in rows]


def test_replaying_deliveries_is_audited(admin_client: Client, tenants: tuple[Installation, Installation]) -> None:
    mine, theirs = tenants
    processed, failed, rejected = WebhookDelivery.objects.filter(installation=mine).order_by("-received_at")

    admin_client.post(
        reverse("admin:webhooks_webhookdelivery_changelist"),
        {"action": "replay", "_selected_action": [str(processed.pk), str(rejected.pk)], "index": "0"},
    )
    admin_client.post(reverse("admin:webhooks_webhookdelivery_replay", args=[failed.pk]))

    assert entries("webhookdelivery") == [
        ("admin", CHANGE, str(processed.pk), "Replayed the delivery."),
        ("admin", CHANGE, str(failed.pk), "Replayed the delivery."),
    ]
    assert not WebhookDelivery.objects.filter(installation=theirs, replay_requested=True).exists()


def test_retrying_a_job_and_starting_a_sync_are_audited(
    admin_client: Client, tenants: tuple[Installation, Installation]
) -> None:
    mine, _ = tenants
    failed = SyncJob.objects.get(installation=mine, status="failed")

    admin_client.post(
        reverse("admin:sync_syncjob_changelist"),
        {"action": "retry", "_selected_action": [str(failed.pk)], "index": "0"},
    )
    admin_client.post(
        reverse("admin:sync-start"), {"eshop_id": mine.eshop_id, "resource": "invoices", "mode": "snapshot"}
    )

    started = SyncJob.objects.filter(installation=mine, resource="invoices", mode="snapshot").get()
    assert entries("syncjob") == [
        ("admin", CHANGE, str(failed.pk), "Retried the failed job."),
        ("admin", ADDITION, str(started.pk), "Started the sync."),
    ]


def test_django_s_own_changes_are_audited_too(admin_client: Client, django_user_model: Any) -> None:
    colleague = django_user_model.objects.create_user("colleague", password="unused-password-8")

    admin_client.post(
        reverse("admin:auth_user_change", args=[colleague.pk]),
        {
            "username": "colleague",
            "is_active": "on",
            "is_staff": "on",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
            "initial-date_joined_0": "2026-01-01",
            "initial-date_joined_1": "00:00:00",
        },
    )

    assert entries("user") == [("admin", CHANGE, str(colleague.pk), "Changed Staff status.")]


def test_the_audit_log_is_listed_searchable_and_read_only(
    admin_client: Client, tenants: tuple[Installation, Installation]
) -> None:
    mine, theirs = tenants
    admin_client.post(reverse("admin:installations_installation_view_as_eshop", args=[mine.pk]))
    admin_client.post(
        reverse("admin:installations_installation_changelist"),
        {"action": "rerun_onboarding", "_selected_action": [str(theirs.pk)], "index": "0"},
    )
    entry = LogEntry.objects.get(object_id=str(mine.pk))
    changelist = reverse("admin:admin_logentry_changelist")

    listing = admin_client.get(changelist)
    searched = admin_client.get(changelist, {"q": "settings page"})
    by_user = admin_client.get(changelist, {"user__id__exact": str(entry.user_id)})

    assert listing.status_code == 200
    html = listing.content.decode()
    assert "Opened the addon settings page as the e-shop." in html
    assert "Reran onboarding." in html
    assert f'href="{reverse("admin:installations_installation_change", args=[mine.pk])}"' in html
    assert list(searched.context["cl"].result_list) == [entry]
    assert len(by_user.context["cl"].result_list) == 2
    assert admin_client.get(reverse("admin:admin_logentry_add")).status_code == 403
    assert (
        admin_client.post(reverse("admin:admin_logentry_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    )
    change = admin_client.post(reverse("admin:admin_logentry_change", args=[entry.pk]), {"change_message": "nothing"})
    assert change.status_code == 403
    assert LogEntry.objects.get(pk=entry.pk).change_message == "Opened the addon settings page as the e-shop."
