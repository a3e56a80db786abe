"""Fixtures for sync tests: onboarded e-shops, snapshot jobs finished on demand, local state for comparisons."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from config.celery import app as celery_app
from installations import services as installation_services
from installations.models import Installation
from sync import jobs, snapshots
from sync.documents import RESOURCES, resource_named
from sync.models import SyncJob
from tests.fakes.shoptet import FakeShoptet
from tests.fakes.shoptet.webhooks import encode, sign
from webhooks import outbox as webhook_outbox
from webhooks import processing as webhook_processing

ORDER_INCLUDE = ("notes", "shippingDetails")


@pytest.fixture
def onboarded(installation: Installation, fake_shoptet: FakeShoptet) -> Installation:
    """The e-shop after onboarding: `job:finished` is registered, so Shoptet accepts snapshot requests."""
    installation_services.onboard(installation=installation)
    return Installation.objects.get(pk=installation.pk)


@pytest.fixture
def other_onboarded(other_installation: Installation) -> Installation:
    installation_services.onboard(installation=other_installation)
    return Installation.objects.get(pk=other_installation.pk)


@pytest.fixture
def jobs_on_demand(fake_shoptet: FakeShoptet) -> FakeShoptet:
    """Shoptet's jobs finish only when a test calls `fake.finish_job`."""
    fake_shoptet.never_finish_jobs = True
    return fake_shoptet


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """Celery runs enqueued tasks at once, in the test, as a worker would."""
    saved = (celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates)
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = saved


@pytest.fixture
def process(eager_tasks: None, django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]
    """Process every stored delivery as the relay and the workers would, tasks included."""

    def run() -> None:
        with django_capture_on_commit_callbacks(execute=True):
            while leaders := webhook_outbox.claim_due_deliveries():
                for delivery_id in leaders:
                    webhook_processing.process_delivery(delivery_id=delivery_id)

    return run


@pytest.fixture
def mirrored_shop(onboarded: Installation, jobs_on_demand: FakeShoptet) -> Installation:
    """Orders and invoices imported by a snapshot; the fake's clock then moves on a little."""
    import_snapshot(jobs_on_demand, onboarded, "orders")
    import_snapshot(jobs_on_demand, onboarded, "invoices")
    jobs_on_demand.advance_time(60)
    return onboarded


@pytest.fixture
def eager_retrying_tasks() -> Iterator[None]:
    """Celery runs enqueued tasks at once, retries included (without their countdown), as a worker would:
    a task's error ends that task, not its caller."""
    saved = (celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates)
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = False
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = saved


def start_snapshot(installation: Installation, resource: str = "orders", **options: Any) -> SyncJob:
    """Request and start a snapshot as the task would; the fake's job is waiting to be finished."""
    job = jobs.request_sync(installation=installation, resource=resource, mode="snapshot", cause="test", **options)
    return snapshots.start_snapshot(job=job)


def finished_snapshot(
    fake: FakeShoptet, installation: Installation, resource: str = "orders", **options: Any
) -> SyncJob:
    job = start_snapshot(installation, resource, **options)
    assert job.status == "running", job.error
    fake.finish_job(installation.eshop_id, job.shoptet_job_id)
    return job


def import_snapshot(fake: FakeShoptet, installation: Installation, resource: str = "orders", **options: Any) -> SyncJob:
    job = finished_snapshot(fake, installation, resource, **options)
    return snapshots.import_snapshot(job=job)


def result_content(fake: FakeShoptet, installation: Installation, job: SyncJob) -> bytes:
    """The gzip bytes of a finished job's result file, as stored by the fake."""
    url = fake.eshops[installation.eshop_id].jobs[job.shoptet_job_id].result_url
    assert url is not None
    return fake.eshops[installation.eshop_id].results[url.rsplit("/", 1)[1]].content


def shoptet_documents(fake: FakeShoptet, installation: Installation, resource: str) -> dict[str, dict[str, Any]]:
    """Every document as Shoptet's detail endpoint answers it, by code."""
    eshop = fake.eshops[installation.eshop_id]
    if resource == "orders":
        return {code: fake.order_detail(installation.eshop_id, code, ORDER_INCLUDE) for code in eshop.orders}
    return {code: fake.invoice_detail(installation.eshop_id, code) for code in eshop.invoices}


def mirrored(installation: Installation, resource: str) -> dict[str, dict[str, Any]]:
    """Every live local document, by code."""
    model = resource_named(resource).model
    return {
        document.code: document.data
        for document in model._default_manager.filter(installation=installation, deleted_at__isnull=True)
    }


def local_state(installation: Installation) -> dict[str, Any]:
    """Everything stored for one installation: documents with their columns and items, cursors."""
    state: dict[str, Any] = {}
    for name, resource in RESOURCES.items():
        documents = resource.model._default_manager.filter(installation=installation).order_by("code")
        state[name] = [
            (
                {column: getattr(document, column) for column in resource.columns},
                document.data,
                document.deleted_at,
                list(document.items.order_by("position").values(*resource.item_columns)),  # type: ignore[attr-defined]
            )
            for document in documents
        ]
    state["cursors"] = sorted(installation.sync_cursors.values_list("resource", "changes_from"))
    return state


def expected_items(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The item columns that Shoptet's object should produce, written out independently of the code under test."""
    rows = []
    for position, item in enumerate(document["items"]):
        rows.append(
            {
                "position": position,
                "item_id": item["itemId"],
                "item_type": item["itemType"],
                "code": item["code"] or "",
                "name": item["name"] or "",
                "amount": Decimal(item["amount"]),
                "unit_price_with_vat": Decimal(item["unitPrice"]["withVat"]),
                "total_price_with_vat": Decimal(item["itemPrice"]["withVat"]),
                "vat_rate": Decimal(item["itemPrice"]["vatRate"]),
            }
        )
    return rows


def deliver(client: Client, installation: Installation, event: str, instance: str) -> int:
    """POST a webhook to the platform exactly as Shoptet does (PHP-style body, HMAC-SHA1 signature)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    created = datetime.now(ZoneInfo("Europe/Prague")).strftime("%Y-%m-%dT%H:%M:%S%z")
    body = encode(
        {"eshopId": installation.eshop_id, "event": event, "eventCreated": created, "eventInstance": instance}
    )
    response = client.post(
        "/shoptet/webhooks/",
        data=body,
        content_type="application/json",
        headers={"Shoptet-Webhook-Signature": sign(body, installation.webhook_signature_key)},
    )
    return response.status_code


__all__ = [
    "deliver",
    "expected_items",
    "finished_snapshot",
    "import_snapshot",
    "local_state",
    "mirrored",
    "result_content",
    "shoptet_documents",
    "start_snapshot",
]
