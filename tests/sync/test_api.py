"""REST API: orders, invoices and jobs of one installation, and starting a sync; nothing leaks between tenants."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.test import Client

from installations.models import Installation
from sync import refresh as sync_refresh
from sync.documents import resource_named
from sync.models import Order, SyncJob
from tests.conftest import ESHOP_ID, OTHER_ESHOP_ID
from tests.fakes.shoptet import FakeShoptet
from tests.sync.conftest import import_snapshot, shoptet_documents, start_snapshot

pytestmark = pytest.mark.django_db

BASE = f"/api/v1/installations/{ESHOP_ID}"
OTHER = f"/api/v1/installations/{OTHER_ESHOP_ID}"
SLASHED = "2026/000777"


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def synced(onboarded: Installation, other_onboarded: Installation, jobs_on_demand: FakeShoptet) -> FakeShoptet:
    """Both e-shops mirrored; both have an order with the same slashed code, with different content."""
    fake = jobs_on_demand
    fake.create_order(ESHOP_ID, code=SLASHED, webhook=False)
    fake.create_order(OTHER_ESHOP_ID, code=SLASHED, webhook=False)
    for installation in (onboarded, other_onboarded):
        import_snapshot(fake, installation, "orders")
        import_snapshot(fake, installation, "invoices")
    return fake


def order_body(order: Order) -> dict:
    return {
        "code": order.code,
        "guid": order.guid,
        "status_id": order.status_id,
        "status_name": order.status_name,
        "currency": order.currency,
        "total_with_vat": f"{order.total_with_vat:.2f}",
        "paid": order.paid,
        "email": order.email,
        "creation_time": iso(order.creation_time),
        "change_time": iso(order.change_time),
        "item_count": order.item_count,
        "data": order.data,
    }


def test_orders_are_listed_newest_first_with_the_interface_fields(
    staff_client: Client, synced: FakeShoptet, onboarded: Installation
) -> None:
    response = staff_client.get(f"{BASE}/orders/")

    assert response.status_code == 200
    body = response.json()
    expected = Order.objects.filter(installation=onboarded).order_by("-creation_time", "-id")
    assert (body["count"], body["next"], body["previous"]) == (6, None, None)
    assert body["results"] == [order_body(order) for order in expected]
    assert {row["code"]: row["data"] for row in body["results"]} == shoptet_documents(synced, onboarded, "orders")
    first = body["results"][0]
    assert first["total_with_vat"] == first["data"]["price"]["withVat"]
    assert first["item_count"] == len(first["data"]["items"])


def test_orders_are_paginated(staff_client: Client, synced: FakeShoptet) -> None:
    response = staff_client.get(f"{BASE}/orders/", {"page": 2, "page_size": 4})

    body = response.json()
    assert (body["count"], len(body["results"]), body["next"]) == (6, 2, None)
    assert body["previous"] == f"http://testserver{BASE}/orders/?page_size=4"


@pytest.mark.parametrize("path", ["2026%2F000777", "2026/000777"])
def test_an_order_code_with_a_slash(
    staff_client: Client, synced: FakeShoptet, onboarded: Installation, path: str
) -> None:
    response = staff_client.get(f"{BASE}/orders/{path}/")

    assert response.status_code == 200
    assert response.json() == order_body(Order.objects.get(installation=onboarded, code=SLASHED))
    assert response.json()["data"] == synced.order_detail(ESHOP_ID, SLASHED, ("notes", "shippingDetails"))


def test_the_same_code_in_another_e_shop_is_that_e_shop_s_order(
    staff_client: Client, synced: FakeShoptet, onboarded: Installation, other_onboarded: Installation
) -> None:
    mine = staff_client.get(f"{BASE}/orders/2026%2F000777/").json()
    theirs = staff_client.get(f"{OTHER}/orders/2026%2F000777/").json()

    assert mine["data"] == synced.order_detail(ESHOP_ID, SLASHED, ("notes", "shippingDetails"))
    assert theirs["data"] == synced.order_detail(OTHER_ESHOP_ID, SLASHED, ("notes", "shippingDetails"))
    assert mine["guid"] != theirs["guid"]
    other_codes = {row["code"] for row in staff_client.get(f"{OTHER}/orders/").json()["results"]}
    assert other_codes == set(synced.eshops[OTHER_ESHOP_ID].orders)


def test_an_order_of_another_e_shop_is_not_found(staff_client: Client, synced: FakeShoptet) -> None:
    only_theirs = next(
        code for code in synced.eshops[OTHER_ESHOP_ID].orders if code not in synced.eshops[ESHOP_ID].orders
    )

    response = staff_client.get(f"{BASE}/orders/{only_theirs.replace('/', '%2F')}/")

    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "message": "No Order matches the given query.", "details": None}


def test_deleted_orders_are_not_listed_nor_shown(
    staff_client: Client, synced: FakeShoptet, onboarded: Installation
) -> None:
    sync_refresh.mark_deleted(installation=onboarded, resource=resource_named("orders"), code=SLASHED)

    listed = {row["code"] for row in staff_client.get(f"{BASE}/orders/").json()["results"]}

    assert SLASHED not in listed
    assert len(listed) == 5
    assert staff_client.get(f"{BASE}/orders/2026%2F000777/").status_code == 404
    assert staff_client.get(f"{OTHER}/orders/2026%2F000777/").status_code == 200


def test_invoices_list_and_detail(staff_client: Client, synced: FakeShoptet, onboarded: Installation) -> None:
    listed = staff_client.get(f"{BASE}/invoices/").json()

    expected = shoptet_documents(synced, onboarded, "invoices")
    assert listed["count"] == 3
    assert {row["code"]: row["data"] for row in listed["results"]} == expected
    times = [row["creation_time"] for row in listed["results"]]
    assert times == sorted(times, reverse=True)
    code = sorted(expected)[0]
    detail = staff_client.get(f"{BASE}/invoices/{code.replace('/', '%2F')}/").json()
    document = expected[code]
    assert detail == {
        "code": code,
        "order_code": document["orderCode"],
        "is_valid": document["isValid"],
        "var_symbol": document["varSymbol"],
        "currency": document["price"]["currencyCode"],
        "total_with_vat": document["price"]["withVat"],
        "creation_time": iso(datetime.strptime(document["creationTime"], "%Y-%m-%dT%H:%M:%S%z")),
        "change_time": iso(datetime.strptime(document["changeTime"], "%Y-%m-%dT%H:%M:%S%z")),
        "data": document,
    }


def test_jobs_are_listed_newest_first_per_installation(
    staff_client: Client, synced: FakeShoptet, onboarded: Installation
) -> None:
    response = staff_client.get(f"{BASE}/jobs/")

    jobs = list(SyncJob.objects.filter(installation=onboarded).order_by("-created_at", "-id"))
    assert [row["id"] for row in response.json()["results"]] == [job.pk for job in jobs]
    assert response.json()["results"][0] == {
        "id": jobs[0].pk,
        "resource": "invoices",
        "mode": "snapshot",
        "shoptet_job_id": jobs[0].shoptet_job_id,
        "status": "completed",
        "created_at": iso(jobs[0].created_at),
        "finished_at": iso(jobs[0].finished_at),
        "imported": 3,
        "error": "",
    }
    assert len(jobs) == 2
    assert [row["resource"] for row in staff_client.get(f"{BASE}/jobs/", {"resource": "orders"}).json()["results"]] == [
        "orders"
    ]
    bad = staff_client.get(f"{BASE}/jobs/", {"status": "done"})
    assert bad.status_code == 400
    assert bad.json()["message"] == "status: must be one of requested, running, importing, completed, failed"


def test_post_sync_starts_a_job(
    staff_client: Client,
    onboarded: Installation,
    jobs_on_demand: FakeShoptet,
    eager_tasks: None,
    django_capture_on_commit_callbacks,
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = staff_client.post(f"{BASE}/sync/", {"resource": "orders", "mode": "snapshot"}, "application/json")

    assert response.status_code == 202
    job = SyncJob.objects.get(installation=onboarded)
    assert response.json() == {
        "id": job.pk,
        "resource": "orders",
        "mode": "snapshot",
        "shoptet_job_id": None,
        "status": "requested",
        "created_at": iso(job.created_at),
        "finished_at": None,
        "imported": 0,
        "error": "",
    }
    assert len(callbacks) == 1
    assert job.status == "running"  # the task ran after the commit
    assert job.cause == "REST API (staff)"
    assert list(jobs_on_demand.eshops[ESHOP_ID].jobs) == [job.shoptet_job_id]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"resource": "products", "mode": "snapshot"}, 'resource: "products" is not a valid choice.'),
        ({"resource": "orders", "mode": "full"}, 'mode: "full" is not a valid choice.'),
        ({"resource": "orders"}, "mode: This field is required."),
    ],
)
def test_post_sync_with_bad_input_is_400(
    staff_client: Client, onboarded: Installation, payload: dict, message: str
) -> None:
    response = staff_client.post(f"{BASE}/sync/", payload, "application/json")

    assert response.status_code == 400
    assert (response.json()["error"], response.json()["message"]) == ("invalid", message)
    assert not SyncJob.objects.exists()


def test_post_sync_while_one_runs_is_409_with_the_running_job(
    staff_client: Client, onboarded: Installation, jobs_on_demand: FakeShoptet
) -> None:
    running = start_snapshot(onboarded, "orders")

    response = staff_client.post(f"{BASE}/sync/", {"resource": "orders", "mode": "snapshot"}, "application/json")

    assert response.status_code == 409
    body = response.json()
    assert (body["error"], body["message"]) == ("sync_running", "A snapshot of orders is already running.")
    assert body["details"]["job"]["id"] == running.pk
    assert body["details"]["job"]["shoptet_job_id"] == running.shoptet_job_id
    assert SyncJob.objects.count() == 1


def test_post_sync_for_a_suspended_e_shop_is_409(staff_client: Client, onboarded: Installation) -> None:
    onboarded.transition_to(Installation.Status.SUSPENDED, cause="test")

    response = staff_client.post(f"{BASE}/sync/", {"resource": "orders", "mode": "changes"}, "application/json")

    assert response.status_code == 409
    assert response.json() == {
        "error": "conflict",
        "message": f"e-shop {ESHOP_ID} is suspended: nothing can be synced",
        "details": None,
    }
    assert not SyncJob.objects.exists()


@pytest.mark.parametrize("path", ["orders/", "orders/1/", "invoices/", "invoices/1/", "jobs/"])
def test_unknown_e_shop_is_404(staff_client: Client, onboarded: Installation, path: str) -> None:
    response = staff_client.get(f"/api/v1/installations/999999/{path}")

    assert response.status_code == 404
    assert response.json() == {
        "error": "not_found",
        "message": "No Installation matches the given query.",
        "details": None,
    }
    post = staff_client.post(
        "/api/v1/installations/999999/sync/", {"resource": "orders", "mode": "changes"}, "application/json"
    )
    assert post.status_code == 404


def test_a_huge_e_shop_id_is_404(staff_client: Client, onboarded: Installation) -> None:
    assert staff_client.get(f"/api/v1/installations/{'9' * 40}/orders/").status_code == 404


def test_without_a_token_it_is_401_and_for_non_staff_403(onboarded: Installation, django_user_model) -> None:
    from rest_framework.authtoken.models import Token

    assert Client().get(f"{BASE}/orders/").status_code == 401
    assert (
        Client().post(f"{BASE}/sync/", {"resource": "orders", "mode": "changes"}, "application/json").status_code == 401
    )
    user = django_user_model.objects.create_user("partner", password="unused-password-2")
    token = Token.objects.create(user=user)
    assert Client(HTTP_AUTHORIZATION=f"Token {token.key}").get(f"{BASE}/orders/").status_code == 403
    assert not SyncJob.objects.exists()
