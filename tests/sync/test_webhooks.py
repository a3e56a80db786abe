"""Webhooks keep the mirror current: each order or invoice event → one detail fetch per code → upsert."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime

import pytest
from django.db import connections
from django.test import Client

from installations.models import Installation
from shoptet_api.errors import ShoptetError
from sync import refresh as sync_refresh
from sync.documents import resource_named
from sync.models import Invoice, Order, RefreshRequest, SyncJob
from tests.fakes.shoptet import FakeShoptet
from tests.sync.conftest import deliver, import_snapshot, local_state, mirrored, shoptet_documents, start_snapshot

pytestmark = pytest.mark.django_db

ORDERS = resource_named("orders")
INVOICES = resource_named("invoices")


def detail_requests(fake: FakeShoptet, resource: str, code: str) -> int:
    return fake.request_count("GET", rf"^/api/{resource}/{code.replace('/', '%2F')}$")


def test_order_events_fetch_each_order_once_and_store_it(
    client: Client, mirrored_shop: Installation, other_onboarded: Installation, jobs_on_demand: FakeShoptet, process
) -> None:
    fake = jobs_on_demand
    shop = mirrored_shop.eshop_id
    created = fake.create_order(shop, code="2026/000900", webhook=False)
    existing = sorted(fake.eshops[shop].orders)[0]
    fake.update_order(shop, existing, paid=True, status=-3, webhook=False)
    other_before = local_state(other_onboarded)

    for event, code in [
        ("order:create", created),
        ("order:update", existing),
        ("order:paid", existing),
        ("order:massUpdate", json.dumps([existing, created])),
    ]:
        assert deliver(client, mirrored_shop, event, code) == 200
    process()

    assert mirrored(mirrored_shop, "orders") == shoptet_documents(fake, mirrored_shop, "orders")
    assert (detail_requests(fake, "orders", created), detail_requests(fake, "orders", existing)) == (1, 1)
    assert Order.objects.get(installation=mirrored_shop, code=existing).paid is True
    assert not RefreshRequest.objects.exists()
    assert local_state(other_onboarded) == other_before


def test_invoice_events_refresh_invoices(
    client: Client, mirrored_shop: Installation, jobs_on_demand: FakeShoptet, process
) -> None:
    fake = jobs_on_demand
    created = fake.create_invoice(mirrored_shop.eshop_id, webhook=False)
    updated = sorted(code for code in fake.eshops[mirrored_shop.eshop_id].invoices if code != created)[0]
    fake.update_invoice(mirrored_shop.eshop_id, updated, isValid=False, webhook=False)

    deliver(client, mirrored_shop, "invoice:create", created)
    deliver(client, mirrored_shop, "invoice:update", updated)
    process()

    assert mirrored(mirrored_shop, "invoices") == shoptet_documents(fake, mirrored_shop, "invoices")
    assert Invoice.objects.get(installation=mirrored_shop, code=updated).is_valid is False


def test_a_delete_event_is_confirmed_by_a_404(
    client: Client, mirrored_shop: Installation, jobs_on_demand: FakeShoptet, process, staff_client: Client
) -> None:
    fake = jobs_on_demand
    gone, still_there = sorted(fake.eshops[mirrored_shop.eshop_id].orders)[:2]
    fake.delete_order(mirrored_shop.eshop_id, gone, webhook=False)

    deliver(client, mirrored_shop, "order:delete", gone)
    deliver(client, mirrored_shop, "order:delete", still_there)  # not deleted at Shoptet: kept, refreshed
    process()

    assert Order.objects.get(installation=mirrored_shop, code=gone).deleted_at is not None
    assert Order.objects.get(installation=mirrored_shop, code=still_there).deleted_at is None
    assert set(mirrored(mirrored_shop, "orders")) == set(fake.eshops[mirrored_shop.eshop_id].orders)
    listed = staff_client.get(f"/api/v1/installations/{mirrored_shop.eshop_id}/orders/").json()
    assert gone not in {row["code"] for row in listed["results"]}


def test_a_late_update_does_not_bring_back_a_deleted_order(
    mirrored_shop: Installation, jobs_on_demand: FakeShoptet
) -> None:
    fake = jobs_on_demand
    code = sorted(fake.eshops[mirrored_shop.eshop_id].orders)[0]
    stale = fake.order_detail(mirrored_shop.eshop_id, code, ("notes", "shippingDetails"))
    fake.delete_order(mirrored_shop.eshop_id, code, webhook=False)
    sync_refresh.queue_refresh(installation=mirrored_shop, resource=ORDERS, codes=[code])
    sync_refresh.refresh_pending(installation=mirrored_shop, resource=ORDERS)

    assert sync_refresh.upsert_document(installation=mirrored_shop, resource=ORDERS, document=stale) is False
    assert Order.objects.get(installation=mirrored_shop, code=code).deleted_at is not None


def test_the_same_code_in_another_e_shop_is_untouched(
    client: Client, mirrored_shop: Installation, other_onboarded: Installation, jobs_on_demand: FakeShoptet, process
) -> None:
    fake = jobs_on_demand
    fake.create_order(other_onboarded.eshop_id, code="SHARED-1", webhook=False)
    import_snapshot(fake, other_onboarded, "orders")
    other_before = local_state(other_onboarded)
    fake.create_order(mirrored_shop.eshop_id, code="SHARED-1", webhook=False)

    deliver(client, mirrored_shop, "order:create", "SHARED-1")
    process()

    mine = Order.objects.get(installation=mirrored_shop, code="SHARED-1")
    assert mine.data == fake.order_detail(mirrored_shop.eshop_id, "SHARED-1", ("notes", "shippingDetails"))
    assert local_state(other_onboarded) == other_before


def test_job_finished_imports_the_snapshot(
    client: Client, onboarded: Installation, jobs_on_demand: FakeShoptet, process
) -> None:
    fake = jobs_on_demand
    job = start_snapshot(onboarded, "orders")
    fake.finish_job(onboarded.eshop_id, job.shoptet_job_id)  # its own job:finished cannot reach the test server

    deliver(client, onboarded, "job:finished", job.shoptet_job_id)
    deliver(client, onboarded, "job:finished", "someoneelses")
    process()

    job.refresh_from_db()
    assert (job.status, job.imported) == ("completed", 5)
    assert mirrored(onboarded, "orders") == shoptet_documents(fake, onboarded, "orders")


def test_addon_approve_catches_up_through_changes(
    client: Client, mirrored_shop: Installation, jobs_on_demand: FakeShoptet, process
) -> None:
    fake = jobs_on_demand
    mirrored_shop.transition_to(Installation.Status.SUSPENDED, cause="test")
    fake.suspend(mirrored_shop.eshop_id, send_system_webhook=False)
    for _ in range(2):
        fake.create_order(mirrored_shop.eshop_id, webhook=False)
    fake.create_invoice(mirrored_shop.eshop_id, webhook=False)
    fake.approve(mirrored_shop.eshop_id, send_system_webhook=False)

    deliver(client, mirrored_shop, "addon:approve", str(mirrored_shop.eshop_id))
    process()

    mirrored_shop.refresh_from_db()
    assert mirrored_shop.status == "active"
    changes = SyncJob.objects.filter(installation=mirrored_shop, mode="changes").order_by("resource")
    assert [(job.resource, job.status, job.imported) for job in changes] == [
        ("invoices", "completed", 1),
        ("orders", "completed", 2),
    ]
    assert mirrored(mirrored_shop, "orders") == shoptet_documents(fake, mirrored_shop, "orders")
    assert mirrored(mirrored_shop, "invoices") == shoptet_documents(fake, mirrored_shop, "invoices")


def test_many_events_for_one_code_make_one_request(mirrored_shop: Installation, jobs_on_demand: FakeShoptet) -> None:
    fake = jobs_on_demand
    code = sorted(fake.eshops[mirrored_shop.eshop_id].orders)[0]
    for _ in range(3):
        sync_refresh.queue_refresh(installation=mirrored_shop, resource=ORDERS, codes=[code])

    outcome = sync_refresh.refresh_pending(installation=mirrored_shop, resource=ORDERS)

    assert (outcome.counts, outcome.more) == ({"imported": 1}, False)
    assert detail_requests(fake, "orders", code) == 1
    assert not RefreshRequest.objects.exists()


def test_a_failed_fetch_leaves_the_code_for_the_retry(
    mirrored_shop: Installation, jobs_on_demand: FakeShoptet, fast_backoff: None
) -> None:
    fake = jobs_on_demand
    first, second = sorted(fake.eshops[mirrored_shop.eshop_id].orders)[:2]
    sync_refresh.queue_refresh(installation=mirrored_shop, resource=ORDERS, codes=[first, second])
    fake.add_fault("GET", rf"^/api/orders/{second}$", 503, times=5)

    with pytest.raises(ShoptetError):
        sync_refresh.refresh_pending(installation=mirrored_shop, resource=ORDERS)

    assert list(RefreshRequest.objects.values_list("code", "claim", "claimed_at")) == [(second, "", None)]
    outcome = sync_refresh.refresh_pending(installation=mirrored_shop, resource=ORDERS)
    assert outcome.counts == {"imported": 1}
    assert not RefreshRequest.objects.exists()


def test_a_suspended_installation_keeps_its_refreshes_for_later(
    mirrored_shop: Installation, jobs_on_demand: FakeShoptet
) -> None:
    code = sorted(jobs_on_demand.eshops[mirrored_shop.eshop_id].orders)[0]
    sync_refresh.queue_refresh(installation=mirrored_shop, resource=ORDERS, codes=[code])
    mirrored_shop.transition_to(Installation.Status.SUSPENDED, cause="test")

    outcome = sync_refresh.refresh_pending(installation=mirrored_shop, resource=ORDERS)

    assert outcome.counts == {}
    assert list(RefreshRequest.objects.values_list("code", flat=True)) == [code]
    assert detail_requests(jobs_on_demand, "orders", code) == 0


@pytest.mark.django_db(transaction=True)
def test_an_event_during_a_fetch_makes_another_fetch(onboarded: Installation, fake_shoptet: FakeShoptet) -> None:
    """The fetch may have read the state before the change the new event announces."""
    fake = fake_shoptet
    code = sorted(fake.eshops[onboarded.eshop_id].orders)[0]
    sync_refresh.queue_refresh(installation=onboarded, resource=ORDERS, codes=[code])
    fake.add_fault("GET", rf"^/api/orders/{code}$", 0, delay=0.5, times=1)
    fetching = threading.Event()

    def refresh() -> None:
        try:
            fetching.set()
            sync_refresh.refresh_pending(installation=onboarded, resource=ORDERS)
        finally:
            connections.close_all()

    worker = threading.Thread(target=refresh)
    worker.start()
    fetching.wait()
    deadline = time.monotonic() + 10
    while not RefreshRequest.objects.filter(claimed_at__isnull=False).exists():
        assert time.monotonic() < deadline, "the worker never claimed the code"
        time.sleep(0.01)
    updated = fake.update_order(onboarded.eshop_id, code, paid=True, webhook=False)
    sync_refresh.queue_refresh(installation=onboarded, resource=ORDERS, codes=[code])
    worker.join()

    # The same run found the code unclaimed again and fetched it a second time.
    assert not RefreshRequest.objects.exists()
    order = Order.objects.get(installation=onboarded, code=code)
    assert (order.paid, order.change_time) == (True, datetime.strptime(updated["changeTime"], "%Y-%m-%dT%H:%M:%S%z"))
    assert order.data == fake.order_detail(onboarded.eshop_id, code, ("notes", "shippingDetails"))
    assert detail_requests(fake, "orders", code) == 2


def test_a_refresh_shoptet_refuses_for_good_is_dropped(
    mirrored_shop: Installation, jobs_on_demand: FakeShoptet
) -> None:
    fake = jobs_on_demand
    refused, fine = sorted(fake.eshops[mirrored_shop.eshop_id].orders)[:2]
    before = Order.objects.get(installation=mirrored_shop, code=refused).data
    sync_refresh.queue_refresh(installation=mirrored_shop, resource=ORDERS, codes=[refused, fine])
    fake.add_fault("GET", rf"^/api/orders/{refused}$", 403, error_code="invalid-token-no-rights", times=5)

    outcome = sync_refresh.refresh_pending(installation=mirrored_shop, resource=ORDERS)

    assert outcome.counts == {"failed": 1, "imported": 1}
    assert not RefreshRequest.objects.exists()
    assert Order.objects.get(installation=mirrored_shop, code=refused).data == before
