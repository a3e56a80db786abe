"""What the admin sees and does: overview, webhook deliveries, resync with live progress, the settings form."""

from __future__ import annotations

import html
from collections.abc import Iterator
from datetime import date, timedelta
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
from django.test import Client
from django.utils import timezone
from django.utils.formats import date_format

from config.celery import app as celery_app
from installations.models import AddonSettings, Installation, SettingsChange
from sync import jobs as sync_jobs
from sync import snapshots as sync_snapshots
from sync import tasks as sync_tasks
from sync.models import SyncJob
from tests.addon.conftest import ADMIN_EMAIL, ADMIN_NAME, Login, form_fields, log_in
from tests.fakes.shoptet import FakeShoptet
from tests.fakes.shoptet.webhooks import encode
from webhooks import signature
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db

OVERVIEW = "/addon/settings/overview/"
PROGRESS = "/addon/settings/progress/"
RESYNC = "/addon/settings/resync/"
DELIVERIES = "/addon/settings/deliveries/"
PREFERENCES = "/addon/settings/preferences/"


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """Celery runs what the page enqueues at once, in the test, as a worker would."""
    saved = (celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates)
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = saved


@pytest.fixture
def mine(client: Client, fake_shoptet: FakeShoptet, onboarded: Installation) -> Login:
    return log_in(client, fake_shoptet, onboarded)


def snapshot(fake: FakeShoptet, installation: Installation, resource: str, *, fail: bool = False) -> SyncJob:
    """A snapshot run as the sync worker runs it: request, Shoptet's job, result file import."""
    fake.never_finish_jobs = True
    if fail:
        fake.fail_next_job(installation.eshop_id)
    job = sync_jobs.request_sync(installation=installation, resource=resource, mode="snapshot", cause="test")
    job = sync_snapshots.start_snapshot(job=job)
    fake.finish_job(installation.eshop_id, str(job.shoptet_job_id))
    return sync_snapshots.import_snapshot(job=job)


def deliver(client: Client, installation: Installation, event: str, instance: str, *, signed: bool = True) -> None:
    """A webhook as Shoptet sends it, through the platform's real endpoint."""
    created = timezone.localtime(timezone.now()).strftime("%Y-%m-%dT%H:%M:%S%z")
    body = encode(
        {"eshopId": str(installation.eshop_id), "event": event, "eventCreated": created, "eventInstance": instance}
    )
    key = installation.webhook_signature_key if signed else "not-the-key"
    response = client.post(
        "/shoptet/webhooks/",
        data=body,
        content_type="application/json",
        headers={signature.HEADER: signature.sign(body, key)},
    )
    assert response.status_code == (200 if signed else 401)


def text(response) -> str:  # type: ignore[no-untyped-def]
    return html.unescape(response.content.decode())


def row_of(page: str, resource: str) -> str:
    return page.split(f'data-resource="{resource}"')[1].split("</tr>")[0]


# ---------------------------------------------------------------------------
# Overview
# ---------------------------------------------------------------------------


def test_overview_shows_this_eshops_sync_state_only(
    client: Client,
    fake_shoptet: FakeShoptet,
    onboarded: Installation,
    other_onboarded: Installation,
    mine: Login,
) -> None:
    orders = snapshot(fake_shoptet, onboarded, "orders")
    failed_invoices = snapshot(fake_shoptet, onboarded, "invoices", fail=True)
    snapshot(fake_shoptet, other_onboarded, "orders")
    snapshot(fake_shoptet, other_onboarded, "invoices")
    assert (orders.status, orders.imported, failed_invoices.status) == ("completed", 5, "failed")

    page = text(client.get(OVERVIEW, mine.query()))

    orders_row, invoices_row = row_of(page, "orders"), row_of(page, "invoices")
    assert '<td class="num" data-label="Stored">5</td>' in orders_row
    assert "Idle" in orders_row
    assert '<td class="num" data-label="Stored">0</td>' in invoices_row
    assert "Last sync failed" in invoices_row
    assert "Never" in invoices_row
    assert "The last import of invoices failed. Start it again below." in page
    assert failed_invoices.error in page
    assert "The last import of orders failed" not in page
    assert page.count('<td data-label="Kind">') == 2  # this e-shop's two jobs, not the other's
    assert "hx-trigger" not in page  # nothing runs: no polling
    assert other_onboarded.name not in page


def test_overview_shows_status_name_and_when_shoptet_last_notified(
    client: Client, onboarded: Installation, other_onboarded: Installation, mine: Login
) -> None:
    before = text(client.get(OVERVIEW, mine.query()))
    deliver(client, onboarded, "order:create", "2026000001")
    deliver(client, other_onboarded, "order:create", "2026000002")
    newest = WebhookDelivery.objects.get(installation=onboarded).received_at

    after = text(client.get(OVERVIEW, mine.query()))

    assert "<dt>Last notification from Shoptet</dt>\n      <dd>None yet</dd>" in before
    with timezone.override(ZoneInfo(onboarded.timezone)):
        shown = date_format(timezone.localtime(newest), "DATETIME_FORMAT")
    assert f"<dt>Last notification from Shoptet</dt>\n      <dd>{shown}</dd>" in after
    assert '<span class="badge badge--completed">Active</span>' in after
    assert f"<dd>{onboarded.eshop_id}</dd>" in after
    assert onboarded.name in after


def test_a_notification_with_a_bad_signature_does_not_count_as_shoptets(
    client: Client, onboarded: Installation, mine: Login
) -> None:
    deliver(client, onboarded, "order:create", "2026000001", signed=False)

    page = text(client.get(OVERVIEW, mine.query()))

    assert "<dt>Last notification from Shoptet</dt>\n      <dd>None yet</dd>" in page


def test_failed_notifications_are_explained_in_plain_words(
    client: Client, onboarded: Installation, other_onboarded: Installation, mine: Login
) -> None:
    for installation in (onboarded, onboarded, other_onboarded):
        WebhookDelivery.objects.create(
            installation=installation, eshop_id=installation.eshop_id, event="order:update", status="failed"
        )
    WebhookDelivery.objects.create(
        installation=onboarded,
        eshop_id=onboarded.eshop_id,
        event="order:update",
        status="failed",
        received_at=timezone.now() - timedelta(days=2),
    )

    page = text(client.get(OVERVIEW, mine.query()))

    assert (
        "2 notifications from Shoptet in the last 24 hours could not be processed. "
        "A full resync brings the data up to date." in page
    )


# ---------------------------------------------------------------------------
# Webhook deliveries
# ---------------------------------------------------------------------------


def test_deliveries_list_this_eshops_notifications_newest_first(
    client: Client, onboarded: Installation, other_onboarded: Installation, mine: Login
) -> None:
    deliver(client, onboarded, "order:create", "2026000001")
    deliver(client, onboarded, "invoice:update", "FA-2026/7")
    deliver(client, onboarded, "order:delete", "2026000003", signed=False)
    deliver(client, other_onboarded, "order:create", "OTHER-SHOP-ORDER")

    page = text(client.get(DELIVERIES, mine.query()))

    rows = page.split("<tbody>")[1].split("</tbody>")[0].split("<tr>")[1:]
    assert [(("Order created" in r), ("Invoice changed" in r), ("Order deleted" in r)) for r in rows] == [
        (False, False, True),
        (False, True, False),
        (True, False, False),
    ]
    assert "<code>2026000003</code>" in rows[0]
    assert '<span class="badge badge--rejected">Rejected</span>' in rows[0]
    assert "Missing or invalid Shoptet-Webhook-Signature." in rows[0]
    assert "<code>FA-2026/7</code>" in rows[1]
    assert '<span class="badge badge--received">Waiting</span>' in rows[1]
    assert "OTHER-SHOP-ORDER" not in page


def test_deliveries_page_says_when_nothing_arrived(client: Client, other_onboarded: Installation, mine: Login) -> None:
    deliver(client, other_onboarded, "order:create", "OTHER-SHOP-ORDER")

    page = text(client.get(DELIVERIES, mine.query()))

    assert "No notification has arrived yet." in page


# ---------------------------------------------------------------------------
# Resync
# ---------------------------------------------------------------------------


def test_resync_starts_the_same_job_as_the_rest_api(
    client: Client, staff_client: Client, onboarded: Installation, mine: Login, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks() as from_page:
        response = client.post(RESYNC, form_fields(mine, resource="orders", mode="changes"))
    page_job = SyncJob.objects.get()
    page_job.delete()
    with django_capture_on_commit_callbacks() as from_api:
        api = staff_client.post(
            f"/api/v1/installations/{onboarded.eshop_id}/sync/",
            {"resource": "orders", "mode": "changes"},
            content_type="application/json",
        )
    api_job = SyncJob.objects.get()

    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert location.path == OVERVIEW
    assert parse_qs(location.query)["started"] == ["orders:changes"]
    assert api.status_code == 202
    fields = ("installation_id", "resource", "mode", "status")
    assert [getattr(page_job, name) for name in fields] == [getattr(api_job, name) for name in fields]
    assert page_job.cause == f"settings page: {ADMIN_EMAIL}"
    assert (
        [callback.func.__self__.name for callback in from_page]
        == [  # type: ignore[attr-defined]
            callback.func.__self__.name  # type: ignore[attr-defined]
            for callback in from_api
        ]
        == ["sync.tasks.sync_changes"]
    )


def test_resync_progress_updates_without_a_reload(
    client: Client,
    fake_shoptet: FakeShoptet,
    onboarded: Installation,
    mine: Login,
    eager_tasks: None,
    django_capture_on_commit_callbacks,
) -> None:
    fake_shoptet.never_finish_jobs = True
    with django_capture_on_commit_callbacks(execute=True):
        started = client.post(
            RESYNC, form_fields(mine, resource="orders", mode="snapshot"), headers={"HX-Request": "true"}
        )
    job = SyncJob.objects.get()

    assert started.status_code == 200
    fragment = text(started)
    assert fragment.startswith('<section id="progress"')
    assert "<html" not in fragment
    assert (job.status, job.mode, job.resource) == ("running", "snapshot", "orders")
    assert 'hx-trigger="every 2s"' in fragment
    assert "Waiting to start" in row_of(fragment, "orders")  # rendered before the task was enqueued
    poll_url = html.unescape(fragment.split('hx-get="')[1].split('"')[0])

    running = text(client.get(poll_url, headers={"HX-Request": "true"}))
    assert "Shoptet is preparing data" in row_of(running, "orders")
    assert 'hx-trigger="every 2s"' in running

    fake_shoptet.finish_job(onboarded.eshop_id, str(job.shoptet_job_id))
    sync_tasks.import_snapshot.delay(job.pk)
    polled = client.get(poll_url, headers={"HX-Request": "true"})

    assert polled.status_code == 200
    done = text(polled)
    assert "hx-trigger" not in done
    assert '<td class="num" data-label="Stored">5</td>' in row_of(done, "orders")
    assert '<span class="badge badge--completed">Completed</span>' in done
    assert '<td class="num" data-label="Imported">5</td>' in done


def test_a_running_sync_cannot_be_started_twice(client: Client, mine: Login, onboarded: Installation) -> None:
    first = client.post(RESYNC, form_fields(mine, resource="invoices", mode="snapshot"))

    second = client.post(
        RESYNC, form_fields(mine, resource="invoices", mode="snapshot"), headers={"HX-Request": "true"}
    )

    assert first.status_code == 302
    assert second.status_code == 400
    assert "This sync is already running. Wait until it finishes." in text(second)
    assert SyncJob.objects.filter(installation=onboarded).count() == 1


@pytest.mark.parametrize(("resource", "mode"), [("customers", "snapshot"), ("orders", "everything"), ("", "")])
def test_an_unknown_resync_is_refused(client: Client, mine: Login, resource: str, mode: str) -> None:
    response = client.post(RESYNC, form_fields(mine, resource=resource, mode=mode))

    assert response.status_code == 400
    assert "Choose orders or invoices, and changes or a full snapshot." in text(response)
    assert SyncJob.objects.count() == 0


def test_a_resource_switched_off_cannot_be_resynced(client: Client, mine: Login, onboarded: Installation) -> None:
    AddonSettings.objects.create(installation=onboarded, sync_orders=False)

    page = text(client.get(OVERVIEW, mine.query()))
    response = client.post(RESYNC, form_fields(mine, resource="orders", mode="changes"))

    assert "(switched off)" in row_of(page, "orders")
    assert 'value="changes" disabled' in row_of(page, "orders")
    assert 'value="changes" disabled' not in row_of(page, "invoices")
    assert response.status_code == 400
    assert "This resource is switched off in the settings. Switch it on first." in text(response)
    assert SyncJob.objects.count() == 0


def test_an_expired_session_is_explained_inside_the_polled_panel(
    client: Client, mine: Login, onboarded: Installation
) -> None:
    onboarded.transition_to(Installation.Status.SUSPENDED, cause="test")

    polled = client.get(PROGRESS, mine.query(), headers={"HX-Request": "true"})

    assert polled.status_code == 403
    fragment = text(polled)
    assert fragment.startswith('<section id="progress" class="card card--refused" role="alert">')
    assert "hx-trigger" not in fragment
    assert "The addon is suspended for this e-shop" in fragment


# ---------------------------------------------------------------------------
# Settings form
# ---------------------------------------------------------------------------


def test_settings_start_with_the_defaults_and_looking_stores_nothing(
    client: Client, mine: Login, onboarded: Installation
) -> None:
    page = text(client.get(PREFERENCES, mine.query()))

    assert 'name="sync_orders" aria-describedby="id_sync_orders_helptext" id="id_sync_orders" checked' in page
    assert 'name="sync_invoices" aria-describedby="id_sync_invoices_helptext" id="id_sync_invoices" checked' in page
    assert 'name="import_since" aria-describedby="id_import_since_helptext" id="id_import_since"' in page
    assert "Nothing has been changed yet." in page
    assert AddonSettings.objects.count() == 0


def test_saving_settings_records_each_change_with_the_admin(
    client: Client, mine: Login, onboarded: Installation, other_onboarded: Installation
) -> None:
    values = {"sync_orders": "on", "import_since": "2025-03-01", "notification_email": "alerts@eshop.example"}

    response = client.post(PREFERENCES, form_fields(mine, **values))

    assert response.status_code == 302
    assert parse_qs(urlsplit(response["Location"]).query)["saved"] == ["3"]
    row = AddonSettings.objects.get(installation=onboarded)
    assert (row.sync_orders, row.sync_invoices, row.import_since, row.notification_email, row.updated_by) == (
        True,
        False,
        date(2025, 3, 1),
        "alerts@eshop.example",
        ADMIN_EMAIL,
    )
    changes = list(
        SettingsChange.objects.order_by("pk").values_list(
            "installation_id", "field", "old_value", "new_value", "admin_email", "admin_name"
        )
    )
    assert changes == [
        (onboarded.pk, "sync_invoices", "true", "false", ADMIN_EMAIL, ADMIN_NAME),
        (onboarded.pk, "import_since", "", "2025-03-01", ADMIN_EMAIL, ADMIN_NAME),
        (onboarded.pk, "notification_email", "", "alerts@eshop.example", ADMIN_EMAIL, ADMIN_NAME),
    ]
    assert not AddonSettings.objects.filter(installation=other_onboarded).exists()

    page = text(client.get(response["Location"]))
    assert "The settings were saved." in page
    assert f'{ADMIN_NAME} <span class="muted"><{ADMIN_EMAIL}></span>' in page
    history = page.split("<tbody>")[1]
    assert ">Sync invoices</td>" in history
    assert ">Yes</td>" in history and ">No</td>" in history
    assert ">2025-03-01</td>" in history


def test_saving_unchanged_settings_records_nothing(client: Client, mine: Login, onboarded: Installation) -> None:
    client.post(PREFERENCES, form_fields(mine, sync_orders="on", sync_invoices="on"))

    response = client.post(PREFERENCES, form_fields(mine, sync_orders="on", sync_invoices="on"))

    assert parse_qs(urlsplit(response["Location"]).query)["saved"] == ["0"]
    assert SettingsChange.objects.count() == 0


def test_a_second_admin_is_recorded_under_their_own_email(
    client: Client, fake_shoptet: FakeShoptet, mine: Login, onboarded: Installation
) -> None:
    colleague = log_in(client, fake_shoptet, onboarded, email="petr@eshop.example", name="Petr Svoboda")
    client.post(PREFERENCES, form_fields(mine, sync_orders="on"))

    client.post(PREFERENCES, form_fields(colleague, sync_orders="on", sync_invoices="on"))

    assert list(SettingsChange.objects.order_by("pk").values_list("field", "new_value", "admin_email")) == [
        ("sync_invoices", "false", ADMIN_EMAIL),
        ("sync_invoices", "true", "petr@eshop.example"),
    ]


@pytest.mark.parametrize(
    ("values", "errors"),
    [
        ({"import_since": "2999-01-01"}, ["The date cannot be in the future."]),
        ({"import_since": "2001-05-05"}, ["Enter a date from 2008-01-01 on."]),
        ({"import_since": "not a date"}, ["Enter a valid date."]),
        ({"notification_email": "not an e-mail"}, ["Enter a valid email address."]),
    ],
)
def test_invalid_settings_are_explained_and_change_nothing(
    client: Client, mine: Login, onboarded: Installation, values: dict[str, str], errors: list[str]
) -> None:
    client.get(PREFERENCES, mine.query())

    response = client.post(PREFERENCES, form_fields(mine, sync_orders="on", **values))

    assert response.status_code == 400
    page = text(response)
    assert [part.split("</p>")[0] for part in page.split('<p class="field__error"')[1:]] == [
        f' id="id_{next(iter(values))}_error">{error}' for error in errors
    ]
    assert "Please correct the marked fields." in page
    assert AddonSettings.objects.count() == 0
    assert SettingsChange.objects.count() == 0
