"""The installation admin: health at a glance, links to the e-shop's data, and actions that are audited."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from addon import auth
from installations.models import Installation, SettingsChange, StatusChange
from sync.models import SyncJob
from tests.fakes.shoptet import FakeShoptet
from webhooks.models import RegistrationDrift

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:installations_installation_changelist")


def change_page(installation: Installation) -> str:
    return reverse("admin:installations_installation_change", args=[installation.pk])


def run_action(client: Client, action: str, *installations: Installation, **fields: str) -> Any:
    data = {"action": action, "_selected_action": [str(i.pk) for i in installations], "index": "0", **fields}
    return client.post(CHANGELIST, data, follow=True)


def audit_log(installation: Installation) -> list[tuple[str, int, str]]:
    entries = LogEntry.objects.filter(object_id=str(installation.pk), content_type__model="installation")
    return [(entry.user.username, entry.action_flag, entry.get_change_message()) for entry in entries.order_by("pk")]


def test_the_list_shows_status_onboarding_webhooks_and_links(
    admin_client: Client, tenants: tuple[Installation, Installation]
) -> None:
    mine, theirs = tenants
    theirs.transition_to(Installation.Status.SUSPENDED, cause="test")
    RegistrationDrift.objects.create(installation=theirs, missing=["order:create"], repaired=False)

    html = admin_client.get(CHANGELIST).content.decode()

    assert ">Active</strong>" in html
    assert ">Suspended</strong>" in html
    assert ">Done</strong>" in html  # onboarding
    assert '<td class="field-webhooks_summary">8/8</td>' in html
    assert '8 <strong style="color:#a11c1c">drift</strong>' in html
    assert f"/admin/sync/order/?eshop={mine.eshop_id}" in html
    assert f"/admin/webhooks/webhookdelivery/?eshop={theirs.eshop_id}" in html


def test_the_list_is_searchable_and_filterable(
    admin_client: Client, tenants: tuple[Installation, Installation]
) -> None:
    mine, theirs = tenants
    theirs.transition_to(Installation.Status.SUSPENDED, cause="test")

    by_id = admin_client.get(CHANGELIST, {"q": str(theirs.eshop_id)})
    by_status = admin_client.get(CHANGELIST, {"status__exact": "active"})
    by_onboarding = admin_client.get(CHANGELIST, {"onboarding_status__exact": "failed"})

    assert list(by_id.context["cl"].result_list) == [theirs]
    assert list(by_status.context["cl"].result_list) == [mine]
    assert list(by_onboarding.context["cl"].result_list) == []


def test_the_change_page_shows_health_counts_and_buttons(
    admin_client: Client, tenants: tuple[Installation, Installation]
) -> None:
    mine, _ = tenants

    html = admin_client.get(change_page(mine)).content.decode()

    assert "OAuth token stored; API token cached, valid" in html
    assert "Stored, renewed" in html
    assert "8 registered" in html
    assert "missing:" not in html
    for link in ("6 orders", "3 invoices", "3 sync jobs", "3 webhook deliveries"):
        assert link in html
    assert "View as e-shop" in html
    for action in ("refresh_identity", "start_sync", "rerun_onboarding", "renew_signature_key"):
        assert f'name="action" value="{action}"' in html


def test_an_uninstalled_eshop_shows_why_there_is_no_api_access(
    admin_client: Client, tenants: tuple[Installation, Installation]
) -> None:
    _, theirs = tenants
    theirs.transition_to(Installation.Status.UNINSTALLED, cause="test")

    html = admin_client.get(change_page(theirs)).content.decode()

    assert "no API calls while the installation is Uninstalled" in html
    assert "View as e-shop" not in html


# ---------------------------------------------------------------------------
# Actions, each in the admin log
# ---------------------------------------------------------------------------


def test_rerun_onboarding_is_queued_for_active_installations_and_audited(
    admin_client: Client, admin_user: Any, tenants: tuple[Installation, Installation]
) -> None:
    mine, theirs = tenants
    theirs.transition_to(Installation.Status.SUSPENDED, cause="test")

    response = run_action(admin_client, "rerun_onboarding", mine, theirs)

    assert "Onboarding queued for 1 active installations." in response.content.decode()
    assert Installation.objects.get(pk=mine.pk).onboarding_status == "pending"
    assert Installation.objects.get(pk=theirs.pk).onboarding_status == "done"
    assert audit_log(mine) == [("admin", CHANGE, "Reran onboarding.")]
    assert audit_log(theirs) == []


def test_renewing_the_signature_key_keeps_the_old_one_for_the_grace_window_and_is_audited(
    admin_client: Client, tenants: tuple[Installation, Installation]
) -> None:
    mine, theirs = tenants
    old_key = mine.webhook_signature_key

    run_action(admin_client, "renew_signature_key", mine)

    renewed = Installation.objects.get(pk=mine.pk)
    assert (renewed.webhook_signature_key, renewed.previous_webhook_signature_key) == ("", old_key)
    assert renewed.onboarding_status == "pending"
    assert audit_log(mine) == [("admin", CHANGE, "Requested a new webhook signature key.")]
    assert Installation.objects.get(pk=theirs.pk).webhook_signature_key == theirs.webhook_signature_key


def test_refreshing_the_identity_asks_shoptet_and_is_audited(
    admin_client: Client, tenants: tuple[Installation, Installation], fake_shoptet: FakeShoptet
) -> None:
    mine, theirs = tenants
    fake_shoptet.eshops[mine.eshop_id].name = "Zlatá rybka s.r.o."

    response = run_action(admin_client, "refresh_identity", mine)

    assert "Identity refreshed for 1 active installations." in response.content.decode()
    assert Installation.objects.get(pk=mine.pk).name == "Zlatá rybka s.r.o."
    assert Installation.objects.get(pk=theirs.pk).name == theirs.name
    assert audit_log(mine) == [("admin", CHANGE, "Refreshed the e-shop's identity from Shoptet.")]


def test_starting_a_sync_asks_what_to_sync_then_starts_and_audits(
    admin_client: Client, tenants: tuple[Installation, Installation]
) -> None:
    mine, theirs = tenants
    jobs_before = SyncJob.objects.count()

    form = run_action(admin_client, "start_sync", mine, theirs)
    started = admin_client.post(
        CHANGELIST,
        {
            "action": "start_sync",
            "_selected_action": [str(mine.pk), str(theirs.pk)],
            "apply": "1",
            "resource": "orders",
            "mode": "changes",
        },
        follow=True,
    )

    assert form.status_code == 200
    assert 'name="resource"' in form.content.decode()
    assert SyncJob.objects.count() == jobs_before + 2
    assert "Changes of orders started for 2 installations." in started.content.decode()
    for tenant in tenants:
        job = SyncJob.objects.filter(installation=tenant).order_by("-pk")[0]
        assert (job.resource, job.mode, job.status, job.cause) == ("orders", "changes", "requested", "admin (admin)")
        assert audit_log(tenant) == [("admin", CHANGE, "Started a sync: changes of orders.")]


def test_a_sync_already_running_is_reported_not_doubled(
    admin_client: Client, tenants: tuple[Installation, Installation]
) -> None:
    mine, _ = tenants  # its invoice changes run already
    jobs_before = SyncJob.objects.count()

    response = admin_client.post(
        CHANGELIST,
        {
            "action": "start_sync",
            "_selected_action": [str(mine.pk)],
            "apply": "1",
            "resource": "invoices",
            "mode": "changes",
        },
        follow=True,
    )

    assert "Changes of invoices started for 0 installations." in response.content.decode()
    assert SyncJob.objects.count() == jobs_before
    assert audit_log(mine) == []


def test_staff_without_the_change_permission_cannot_run_actions(
    client: Client, django_user_model: Any, tenants: tuple[Installation, Installation]
) -> None:
    mine, _ = tenants
    viewer = django_user_model.objects.create_user("viewer", password="unused-password-6", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_installation"))
    client.force_login(viewer)

    response = run_action(client, "rerun_onboarding", mine)

    assert response.status_code == 200
    assert "rerun_onboarding" not in response.content.decode()  # not even offered
    assert Installation.objects.get(pk=mine.pk).onboarding_status == "done"
    assert audit_log(mine) == []


# ---------------------------------------------------------------------------
# View as e-shop
# ---------------------------------------------------------------------------


def test_view_as_eshop_opens_its_settings_page_and_is_audited(
    admin_client: Client, client: Client, tenants: tuple[Installation, Installation]
) -> None:
    mine, _ = tenants
    url = reverse("admin:installations_installation_view_as_eshop", args=[mine.pk])

    response = admin_client.post(url)

    assert response.status_code == 302
    location = urlsplit(response["Location"])
    query = parse_qs(location.query)
    assert location.path == "/addon/settings/overview/"
    assert query["eshopId"] == [str(mine.eshop_id)]
    page = client.get(response["Location"])  # a new tab: no admin session needed, the token carries it
    assert page.status_code == 200
    assert mine.name in page.content.decode()
    assert audit_log(mine) == [("admin", CHANGE, "Opened the addon settings page as the e-shop.")]
    assert query["t"][0] not in LogEntry.objects.get().change_message


def test_a_change_made_while_viewing_as_eshop_names_the_staff_user(
    admin_client: Client, client: Client, admin_user: Any, tenants: tuple[Installation, Installation]
) -> None:
    mine, _ = tenants
    location = admin_client.post(reverse("admin:installations_installation_view_as_eshop", args=[mine.pk]))["Location"]
    token = parse_qs(urlsplit(location).query)["t"][0]

    saved = client.post(
        "/addon/settings/preferences/",
        {
            "eshopId": str(mine.eshop_id),
            "language": "en",
            "t": token,
            "csrf": auth.form_token(auth.read_token(token)),
            "sync_orders": "on",
            "notification_email": "ops@example.com",
        },
    )

    assert saved.status_code == 302
    change = SettingsChange.objects.filter(installation=mine).first()
    assert change is not None
    assert change.admin_email == admin_user.email
    assert change.admin_name == "Partner staff: admin"


def test_view_as_eshop_takes_a_post(admin_client: Client, tenants: tuple[Installation, Installation]) -> None:
    mine, _ = tenants

    response = admin_client.get(reverse("admin:installations_installation_view_as_eshop", args=[mine.pk]))

    assert response.status_code == 405
    assert audit_log(mine) == []


def test_view_as_eshop_refuses_an_inactive_installation(
    admin_client: Client, tenants: tuple[Installation, Installation]
) -> None:
    _, theirs = tenants
    theirs.transition_to(Installation.Status.SUSPENDED, cause="test")

    response = admin_client.post(reverse("admin:installations_installation_view_as_eshop", args=[theirs.pk]))

    assert response["Location"] == change_page(theirs)
    assert audit_log(theirs) == []


def test_view_as_eshop_needs_the_change_permission(
    client: Client, django_user_model: Any, tenants: tuple[Installation, Installation]
) -> None:
    mine, _ = tenants
    viewer = django_user_model.objects.create_user("viewer", password="unused-password-7", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_installation"))
    client.force_login(viewer)

    response = client.post(reverse("admin:installations_installation_view_as_eshop", args=[mine.pk]))

    assert response.status_code == 403
    assert "View as e-shop" not in client.get(change_page(mine)).content.decode()
    assert audit_log(mine) == []


def test_the_history_tables_do_not_repeat_each_rows_name_above_it(
    admin_client: Client, tenants: tuple[Installation, Installation]
) -> None:
    installation = tenants[0]
    StatusChange.objects.create(installation=installation, from_status="active", to_status="suspended", cause="test")
    registrations = list(installation.webhook_registrations.all())
    assert registrations

    page = admin_client.get(change_page(installation)).content.decode()

    # Django's tabular inline writes str(row) in a paragraph of the row's first cell; the columns say it already.
    names = [str(row) for row in (*registrations, *installation.status_changes.all())]
    assert [name for name in names if escape(name) in page] == []
    assert "changes cursors" in page.lower() and registrations[0].event in page
