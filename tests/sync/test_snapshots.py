"""Snapshots: Shoptet's async job, its gzip JSON Lines result streamed into the tables, all or nothing."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.utils import timezone

from installations.models import Installation
from sync import jobs, refresh, snapshots
from sync.documents import resource_named
from sync.models import Invoice, Order, SyncCursor, SyncJob
from tests.conftest import install_via_fake
from tests.fakes.shoptet import FakeShoptet
from tests.sync.conftest import (
    expected_items,
    finished_snapshot,
    import_snapshot,
    local_state,
    mirrored,
    result_content,
    shoptet_documents,
    start_snapshot,
)

pytestmark = pytest.mark.django_db


def test_order_snapshot_mirrors_every_order_field_for_field(
    onboarded: Installation, other_onboarded: Installation, jobs_on_demand: FakeShoptet
) -> None:
    fake = jobs_on_demand
    fake.create_order(onboarded.eshop_id, code="2026/000777", webhook=False)
    other_before = local_state(other_onboarded)

    job = import_snapshot(fake, onboarded, "orders")

    expected = shoptet_documents(fake, onboarded, "orders")
    assert (job.status, job.error, job.received, job.imported, job.skipped, job.deleted) == (
        "completed",
        "",
        6,
        6,
        0,
        0,
    )
    assert job.finished_at is not None
    assert mirrored(onboarded, "orders") == expected
    for code, document in expected.items():
        order = Order.objects.get(installation=onboarded, code=code)
        price = document["price"]
        assert (
            order.guid,
            order.status_id,
            order.status_name,
            order.currency,
            order.total_with_vat,
            order.total_without_vat,
            order.to_pay,
            order.paid,
            order.email,
            order.creation_time,
            order.change_time,
            order.item_count,
            order.deleted_at,
        ) == (
            document["guid"],
            document["status"]["id"],
            document["status"]["name"],
            price["currencyCode"],
            Decimal(price["withVat"]),
            Decimal(price["withoutVat"]),
            Decimal(price["toPay"]),
            document["paid"],
            document["email"],
            datetime.strptime(document["creationTime"], "%Y-%m-%dT%H:%M:%S%z"),
            datetime.strptime(document["changeTime"], "%Y-%m-%dT%H:%M:%S%z"),
            len(document["items"]),
            None,
        )
        assert list(order.items.values(*expected_items(document)[0])) == expected_items(document)
    assert local_state(other_onboarded) == other_before


def test_invoice_snapshot_mirrors_every_invoice_field_for_field(
    onboarded: Installation, other_onboarded: Installation, jobs_on_demand: FakeShoptet
) -> None:
    fake = jobs_on_demand
    other_before = local_state(other_onboarded)

    job = import_snapshot(fake, onboarded, "invoices")

    expected = shoptet_documents(fake, onboarded, "invoices")
    assert (job.status, job.received, job.imported) == ("completed", 3, 3)
    assert mirrored(onboarded, "invoices") == expected
    for code, document in expected.items():
        invoice = Invoice.objects.get(installation=onboarded, code=code)
        assert (
            invoice.order_code,
            invoice.is_valid,
            invoice.var_symbol,
            invoice.currency,
            invoice.total_with_vat,
            invoice.total_without_vat,
            invoice.to_pay,
            invoice.paid,
            invoice.billing_method_id,
            invoice.billing_method_name,
            invoice.vat_mode,
            invoice.due_date and invoice.due_date.isoformat(),
            invoice.tax_date and invoice.tax_date.isoformat(),
            invoice.creation_time,
            invoice.change_time,
            invoice.item_count,
        ) == (
            document["orderCode"],
            document["isValid"],
            document["varSymbol"],
            document["price"]["currencyCode"],
            Decimal(document["price"]["withVat"]),
            Decimal(document["price"]["withoutVat"]),
            Decimal(document["price"]["toPay"]),
            document["paid"],
            document["billingMethod"]["id"],
            document["billingMethod"]["name"],
            document["vatMode"],
            document["dueDate"],
            document["taxDate"],
            datetime.strptime(document["creationTime"], "%Y-%m-%dT%H:%M:%S%z"),
            datetime.strptime(document["changeTime"], "%Y-%m-%dT%H:%M:%S%z"),
            len(document["items"]),
        )
        assert list(invoice.items.values(*expected_items(document)[0])) == expected_items(document)
    assert Order.objects.filter(installation=onboarded).count() == 0
    assert local_state(other_onboarded) == other_before


def test_a_completed_snapshot_starts_the_changes_cursor(onboarded: Installation, jobs_on_demand: FakeShoptet) -> None:
    job = import_snapshot(jobs_on_demand, onboarded, "orders")

    cursor = SyncCursor.objects.get(installation=onboarded, resource="orders")
    assert cursor.changes_from == job.created_at - jobs.CURSOR_OVERLAP
    assert not SyncCursor.objects.filter(installation=onboarded, resource="invoices").exists()


def test_reimporting_the_same_snapshot_creates_no_duplicates(
    onboarded: Installation, jobs_on_demand: FakeShoptet
) -> None:
    import_snapshot(jobs_on_demand, onboarded, "orders")
    first = local_state(onboarded)

    again = import_snapshot(jobs_on_demand, onboarded, "orders")

    assert (again.received, again.imported, again.skipped) == (5, 5, 0)
    assert Order.objects.filter(installation=onboarded).count() == 5
    state = local_state(onboarded)
    assert state["orders"] == first["orders"]


def test_one_snapshot_at_a_time_per_installation_and_resource(
    onboarded: Installation, other_onboarded: Installation, jobs_on_demand: FakeShoptet
) -> None:
    running = start_snapshot(onboarded, "orders")

    with pytest.raises(jobs.SyncRunning) as refused:
        jobs.request_sync(installation=onboarded, resource="orders", mode="snapshot", cause="test")

    assert refused.value.job.pk == running.pk
    assert jobs.request_sync(installation=onboarded, resource="invoices", mode="snapshot", cause="test")
    assert jobs.request_sync(installation=other_onboarded, resource="orders", mode="snapshot", cause="test")
    assert jobs.request_sync(installation=onboarded, resource="orders", mode="changes", cause="test")
    assert jobs_on_demand.request_count("GET", r"^/api/orders/snapshot$") == 1


def test_starting_twice_asks_shoptet_once(onboarded: Installation, jobs_on_demand: FakeShoptet) -> None:
    job = start_snapshot(onboarded, "orders")

    again = snapshots.start_snapshot(job=job)

    assert (again.status, again.shoptet_job_id) == ("running", job.shoptet_job_id)
    assert jobs_on_demand.request_count("GET", r"^/api/orders/snapshot$") == 1


def test_an_incremental_snapshot_asks_only_for_changed_documents(
    onboarded: Installation, jobs_on_demand: FakeShoptet
) -> None:
    fake = jobs_on_demand
    fake.advance_time(3600)
    changed = fake.create_order(onboarded.eshop_id, webhook=False)

    job = import_snapshot(fake, onboarded, "orders", change_time_from=timezone.now() + timedelta(minutes=30))

    assert (job.status, job.received, job.imported, job.deleted) == ("completed", 1, 1, 0)
    assert set(mirrored(onboarded, "orders")) == {changed}


def test_a_full_snapshot_marks_documents_missing_from_it_deleted(
    onboarded: Installation, jobs_on_demand: FakeShoptet, staff_client
) -> None:
    fake = jobs_on_demand
    import_snapshot(fake, onboarded, "orders")
    gone = sorted(fake.eshops[onboarded.eshop_id].orders)[0]
    fake.delete_order(onboarded.eshop_id, gone, webhook=False)

    job = import_snapshot(fake, onboarded, "orders")

    assert (job.received, job.imported, job.deleted) == (4, 4, 1)
    order = Order.objects.get(installation=onboarded, code=gone)
    assert order.deleted_at == job.shoptet_created_at
    assert set(mirrored(onboarded, "orders")) == set(fake.eshops[onboarded.eshop_id].orders)


def test_a_snapshot_never_replaces_newer_local_data(onboarded: Installation, jobs_on_demand: FakeShoptet) -> None:
    """The snapshot is built before an order changes; the change arrives first, the old snapshot later."""
    fake = jobs_on_demand
    stale = finished_snapshot(fake, onboarded, "orders")
    code = sorted(fake.eshops[onboarded.eshop_id].orders)[0]
    fake.advance_time(120)
    fresh = fake.update_order(onboarded.eshop_id, code, paid=True, webhook=False)
    refresh.upsert_document(installation=onboarded, resource=resource_named("orders"), document=fresh)

    job = snapshots.import_snapshot(job=stale)

    assert (job.status, job.received, job.imported, job.skipped) == ("completed", 5, 4, 1)
    order = Order.objects.get(installation=onboarded, code=code)
    assert (order.data, order.paid) == (fresh, True)
    assert order.change_time == datetime.strptime(fresh["changeTime"], "%Y-%m-%dT%H:%M:%S%z")


def test_lost_job_finished_is_found_by_polling(onboarded: Installation, jobs_on_demand: FakeShoptet) -> None:
    fake = jobs_on_demand
    fake.suppress_job_webhook = True
    job = start_snapshot(onboarded, "orders")
    assert job.started_at is not None
    assert job.next_poll_at == job.started_at + snapshots.POLL_DELAYS[0]

    assert snapshots.poll_snapshot(job=job) is False
    job.refresh_from_db()
    assert (job.status, job.polls) == ("running", 1)
    assert job.next_poll_at is not None

    fake.finish_job(onboarded.eshop_id, job.shoptet_job_id)
    assert snapshots.poll_snapshot(job=job) is True
    job = snapshots.import_snapshot(job=job)

    assert (job.status, job.imported, job.polls) == ("completed", 5, 1)
    assert mirrored(onboarded, "orders") == shoptet_documents(fake, onboarded, "orders")


def test_polling_stops_at_ten_unfinished_answers_and_the_job_fails_after_three_hours(
    onboarded: Installation, jobs_on_demand: FakeShoptet
) -> None:
    fake = jobs_on_demand
    job = start_snapshot(onboarded, "orders")
    detail_path = rf"^/api/system/jobs/{job.shoptet_job_id}$"

    for _ in range(15):
        assert snapshots.poll_snapshot(job=job) is False
        snapshots.import_snapshot(job=job)  # a stray job:finished must not spend Shoptet's 10 either

    job.refresh_from_db()
    assert fake.request_count("GET", detail_path) == 10
    assert (job.status, job.polls) == ("running", 10)
    assert job.started_at is not None
    assert job.next_poll_at == job.started_at + snapshots.JOB_TIMEOUT

    SyncJob.objects.filter(pk=job.pk).update(started_at=timezone.now() - snapshots.JOB_TIMEOUT)
    assert snapshots.poll_snapshot(job=job) is False

    job.refresh_from_db()
    assert (job.status, job.error) == ("failed", f"Shoptet did not finish job {job.shoptet_job_id} within 3 hours")
    assert fake.request_count("GET", detail_path) == 10
    assert Order.objects.filter(installation=onboarded).count() == 0


def test_the_relay_polls_due_jobs_once(onboarded: Installation, jobs_on_demand: FakeShoptet) -> None:
    job = start_snapshot(onboarded, "orders")
    later = timezone.now() + snapshots.POLL_DELAYS[0] + timedelta(seconds=1)

    assert jobs.claim_due_work(now=timezone.now()).polls == []
    assert jobs.claim_due_work(now=later).polls == [job.pk]
    assert jobs.claim_due_work(now=later).polls == []


def test_a_failed_job_fails_the_sync_and_a_retry_starts_a_new_one(
    onboarded: Installation, jobs_on_demand: FakeShoptet
) -> None:
    fake = jobs_on_demand
    fake.fail_next_job(onboarded.eshop_id)

    job = import_snapshot(fake, onboarded, "orders")

    assert (job.status, job.error) == (
        "failed",
        f"Shoptet's job {job.shoptet_job_id} ended failed: Job processing failed: simulated error.",
    )
    assert job.finished_at is not None
    assert Order.objects.filter(installation=onboarded).count() == 0
    assert not SyncCursor.objects.filter(installation=onboarded).exists()

    retried = jobs.retry_job(job=job)
    assert (retried.status, retried.shoptet_job_id, retried.error, retried.attempts) == ("requested", "", "", 2)
    retried = snapshots.start_snapshot(job=retried)
    fake.finish_job(onboarded.eshop_id, retried.shoptet_job_id)
    retried = snapshots.import_snapshot(job=retried)

    assert (retried.status, retried.imported) == ("completed", 5)
    assert retried.shoptet_job_id != job.shoptet_job_id


def test_a_result_that_expired_by_its_valid_until_restarts_the_snapshot(
    onboarded: Installation, jobs_on_demand: FakeShoptet
) -> None:
    fake = jobs_on_demand
    fake.result_validity = -60
    job = finished_snapshot(fake, onboarded, "orders")
    first_shoptet_job = job.shoptet_job_id

    job = snapshots.import_snapshot(job=job)

    assert (job.status, job.restarts) == ("running", 1)
    assert job.shoptet_job_id != first_shoptet_job
    assert job.note == f"the result of job {first_shoptet_job} expired at " + job.note.rsplit(" at ", 1)[1]
    assert fake.request_count("GET", r"/api-results/") == 0
    assert Order.objects.filter(installation=onboarded).count() == 0

    fake.result_validity = 3600
    fake.finish_job(onboarded.eshop_id, job.shoptet_job_id)
    job = snapshots.import_snapshot(job=job)
    assert (job.status, job.imported, job.restarts) == ("completed", 5, 1)


def test_a_result_file_already_gone_restarts_the_snapshot(onboarded: Installation, jobs_on_demand: FakeShoptet) -> None:
    """Shoptet's clock ran past the validity while ours did not: the download answers 404."""
    fake = jobs_on_demand
    job = finished_snapshot(fake, onboarded, "orders")
    fake.advance_time(25 * 3600)

    job = snapshots.import_snapshot(job=job)

    assert (job.status, job.restarts, job.note) == ("running", 1, "the result file is gone (HTTP 404)")
    assert Order.objects.filter(installation=onboarded).count() == 0
    fake.finish_job(onboarded.eshop_id, job.shoptet_job_id)
    assert snapshots.import_snapshot(job=job).status == "completed"


def test_restarts_are_limited(onboarded: Installation, jobs_on_demand: FakeShoptet) -> None:
    fake = jobs_on_demand
    fake.result_validity = -60
    job = finished_snapshot(fake, onboarded, "orders")
    for _ in range(snapshots.MAX_RESTARTS):
        job = snapshots.import_snapshot(job=job)
        fake.finish_job(onboarded.eshop_id, job.shoptet_job_id)

    job = snapshots.import_snapshot(job=job)

    assert job.status == "failed"
    assert job.error.endswith(f"; gave up after {snapshots.MAX_RESTARTS} new jobs")
    assert fake.request_count("GET", r"^/api/orders/snapshot$") == snapshots.MAX_RESTARTS + 1


def _truncated(content: bytes) -> bytes:
    return content[: len(content) // 2]


def _corrupt(content: bytes) -> bytes:
    middle = len(content) // 2
    return content[:middle] + bytes(b ^ 0xFF for b in content[middle : middle + 64]) + content[middle + 64 :]


BAD_FILES: dict[str, tuple[Callable[[bytes], bytes | str], str]] = {
    "truncated": (
        _truncated,
        "the result file is truncated (Compressed file ended before the end-of-stream marker was reached)",
    ),
    "corrupt": (_corrupt, "the result file is corrupt"),
    "empty": (lambda content: b"", "the result file is empty (0 bytes)"),
    "html error page": (
        lambda content: "<!DOCTYPE html><html><body>502 Bad Gateway</body></html>",
        "the result file is not gzip; it starts with '<!DOCTYPE html><html><body>502 Bad Gatew'",
    ),
    "not json lines": (
        lambda content: gzip.compress(b'{"code": "1"}\n<html>oops</html>\n'),
        "line 2 is not JSON (unexpected character",
    ),
    "no code": (lambda content: gzip.compress(b'{"guid": "x"}\n'), "line 1 is not a document: the object has no code"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_a_bad_result_file_fails_the_job_changes_nothing_and_a_retry_succeeds(
    kind: str, onboarded: Installation, other_onboarded: Installation, jobs_on_demand: FakeShoptet
) -> None:
    fake = jobs_on_demand
    import_snapshot(fake, onboarded, "orders")
    for code in sorted(fake.eshops[onboarded.eshop_id].orders)[:2]:
        fake.advance_time(60)
        fake.update_order(onboarded.eshop_id, code, paid=True, status=-3, webhook=False)
    fake.create_order(onboarded.eshop_id, webhook=False)
    import_snapshot(fake, other_onboarded, "orders")
    before = local_state(onboarded), local_state(other_onboarded)
    job = finished_snapshot(fake, onboarded, "orders")
    damage, message = BAD_FILES[kind]
    fake.add_fault("GET", r"/api-results/", 200, body=damage(result_content(fake, onboarded, job)))

    job = snapshots.import_snapshot(job=job)

    assert job.status == "failed"
    assert job.error.startswith(message), job.error
    assert (job.received, job.imported) == (0, 0)
    assert (local_state(onboarded), local_state(other_onboarded)) == before

    job = snapshots.import_snapshot(job=jobs.retry_job(job=job))

    # An equal change time is taken too: Shoptet's times have whole seconds, two changes may share one.
    assert (job.status, job.error, job.received, job.imported, job.attempts) == ("completed", "", 6, 6, 2)
    assert mirrored(onboarded, "orders") == shoptet_documents(fake, onboarded, "orders")
    assert fake.request_count("GET", r"^/api/orders/snapshot$") == 3  # the retry reused the valid result


def test_token_expiry_and_rate_limits_during_a_snapshot(
    onboarded: Installation, jobs_on_demand: FakeShoptet, fast_backoff: None
) -> None:
    fake = jobs_on_demand
    job = finished_snapshot(fake, onboarded, "invoices")
    fake.expire_api_tokens(onboarded.eshop_id)
    fake.add_fault("GET", r"^/api/system/jobs/", 429, times=2, headers={"Retry-After": "0"})

    job = snapshots.import_snapshot(job=job)

    assert (job.status, job.imported) == ("completed", 3)
    assert mirrored(onboarded, "invoices") == shoptet_documents(fake, onboarded, "invoices")
    assert fake.stats(onboarded.eshop_id)["tokens_minted"] == 2


def test_suspended_installations_start_nothing(onboarded: Installation, jobs_on_demand: FakeShoptet) -> None:
    job = jobs.request_sync(installation=onboarded, resource="orders", mode="snapshot", cause="test")
    onboarded.transition_to(Installation.Status.SUSPENDED, cause="test")

    job = snapshots.start_snapshot(job=job)

    assert (job.status, job.error) == ("failed", f"e-shop {onboarded.eshop_id} is suspended: not synced")
    assert jobs_on_demand.request_count("GET", r"/api/orders/snapshot") == 0
    with pytest.raises(jobs.SyncError, match="is suspended: nothing can be synced"):
        jobs.request_sync(installation=onboarded, resource="orders", mode="snapshot", cause="test")


def test_a_bigger_e_shop_imports_in_one_go(fake_shoptet: FakeShoptet, jobs_on_demand: FakeShoptet, db: None) -> None:
    from installations import services as installation_services

    big = install_via_fake(fake_shoptet, 700001, orders=300, invoices=120)
    installation_services.onboard(installation=big)

    orders = import_snapshot(fake_shoptet, big, "orders")
    invoices = import_snapshot(fake_shoptet, big, "invoices")

    assert (orders.imported, invoices.imported) == (300, 120)
    assert mirrored(big, "orders") == shoptet_documents(fake_shoptet, big, "orders")
    assert mirrored(big, "invoices") == shoptet_documents(fake_shoptet, big, "invoices")
    item_total = sum(len(order["items"]) for order in fake_shoptet.eshops[big.eshop_id].orders.values())
    assert Order.objects.filter(installation=big).aggregate(total=Sum("item_count"))["total"] == item_total
    assert Order.objects.get(installation=big, code=next(iter(fake_shoptet.eshops[big.eshop_id].orders))).items.count()
