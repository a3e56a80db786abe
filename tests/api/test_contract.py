"""Every endpoint of /api/v1/: token auth, unknown e-shops, bad input, pagination, filters, one error body,
throttling, and a second tenant's rows never in the results."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.throttling import UserRateThrottle

from installations.models import Installation
from sync.models import Invoice, Order, SyncJob
from tests.api.conftest import SLASHED
from tests.conftest import ESHOP_ID, OTHER_ESHOP_ID, grant_platform_permissions
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db

UNKNOWN = 999999
# Every endpoint, as (method, path template, body for a POST).
ENDPOINTS: list[tuple[str, str, dict[str, str] | None]] = [
    ("get", "/api/v1/installations/", None),
    ("get", "/api/v1/installations/{eshop_id}/", None),
    ("get", "/api/v1/installations/{eshop_id}/orders/", None),
    ("get", "/api/v1/installations/{eshop_id}/orders/{order}/", None),
    ("get", "/api/v1/installations/{eshop_id}/invoices/", None),
    ("get", "/api/v1/installations/{eshop_id}/invoices/{invoice}/", None),
    ("get", "/api/v1/installations/{eshop_id}/jobs/", None),
    ("post", "/api/v1/installations/{eshop_id}/sync/", {"resource": "orders", "mode": "changes"}),
    ("get", "/api/v1/webhook-deliveries/", None),
]
NESTED = [endpoint for endpoint in ENDPOINTS if "{eshop_id}" in endpoint[1]]
LISTS = {
    "/api/v1/installations/{eshop_id}/orders/": "code",
    "/api/v1/installations/{eshop_id}/invoices/": "code",
    "/api/v1/installations/{eshop_id}/jobs/": "id",
}


def url(template: str, eshop_id: int = ESHOP_ID) -> str:
    invoice = Invoice.objects.filter(installation__eshop_id=ESHOP_ID).order_by("code").values_list("code", flat=True)
    return template.format(
        eshop_id=eshop_id, order=SLASHED.replace("/", "%2F"), invoice=(invoice.first() or "x").replace("/", "%2F")
    )


def call(client: Client, method: str, path: str, body: dict[str, str] | None) -> Any:
    if method == "post":
        return client.post(path, body or {}, content_type="application/json")
    return client.get(path)


def assert_error(response: Any, status: int, error: str) -> None:
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "message", "details"}
    assert body["error"] == error
    assert body["message"]


# ---------------------------------------------------------------------------
# Auth
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "template", "body"), ENDPOINTS)
def test_without_a_token_it_is_401(
    client: Client, installation: Installation, method: str, template: str, body: Any
) -> None:
    jobs_before = SyncJob.objects.count()

    response = call(client, method, url(template), body)

    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Token"
    assert SyncJob.objects.count() == jobs_before


@pytest.mark.parametrize(("method", "template", "body"), ENDPOINTS)
def test_a_wrong_token_is_401(installation: Installation, method: str, template: str, body: Any) -> None:
    wrong = Client(HTTP_AUTHORIZATION="Token 0123456789abcdef0123456789abcdef01234567")

    assert_error(call(wrong, method, url(template), body), 401, "authentication_failed")


@pytest.mark.parametrize(("method", "template", "body"), ENDPOINTS)
def test_the_admin_session_alone_is_not_enough(
    admin_client: Client, installation: Installation, method: str, template: str, body: Any
) -> None:
    assert_error(call(admin_client, method, url(template), body), 401, "not_authenticated")


@pytest.mark.parametrize(("method", "template", "body"), ENDPOINTS)
def test_a_user_who_is_not_staff_is_403(
    django_user_model: Any, installation: Installation, method: str, template: str, body: Any
) -> None:
    user = django_user_model.objects.create_user("merchant", password="unused-password-4")
    merchant = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")

    assert_error(call(merchant, method, url(template), body), 403, "permission_denied")


# ---------------------------------------------------------------------------
# Unknown e-shops, routes and methods
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "template", "body"), NESTED)
def test_an_unknown_eshop_is_404(
    staff_client: Client, tenants: tuple[Installation, Installation], method: str, template: str, body: Any
) -> None:
    jobs_before = SyncJob.objects.count()

    response = call(staff_client, method, url(template, UNKNOWN), body)

    assert_error(response, 404, "not_found")
    assert response.json()["message"] == "No Installation matches the given query."
    assert SyncJob.objects.count() == jobs_before


@pytest.mark.parametrize(("method", "template", "body"), NESTED)
@pytest.mark.parametrize("eshop_id", ["abc", "-1", "1%27%20OR%201=1", "9" * 40])
def test_a_malformed_eshop_id_is_404_with_the_error_body(
    staff_client: Client, installation: Installation, method: str, template: str, body: Any, eshop_id
) -> None:
    assert_error(
        call(staff_client, method, template.format(eshop_id=eshop_id, order="x", invoice="x"), body), 404, "not_found"
    )


@pytest.mark.parametrize(
    "path", ["/api/v1/", "/api/v1/orders/", "/api/v2/installations/", "/api/v1/installations/1/x/"]
)
def test_a_path_that_is_no_endpoint_is_404_with_the_error_body(staff_client: Client, path: str) -> None:
    assert staff_client.get(path).json() == {"error": "not_found", "message": "No such API endpoint.", "details": None}


def test_outside_the_api_a_404_stays_a_page(client: Client) -> None:
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(("method", "template", "body"), ENDPOINTS)
def test_writes_the_api_does_not_offer_are_405(
    staff_client: Client, installation: Installation, method: str, template: str, body: Any
) -> None:
    other = staff_client.delete if method == "get" else staff_client.get

    assert_error(other(url(template)), 405, "method_not_allowed")


# ---------------------------------------------------------------------------
# Bad input: 400 with a message
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "message"),
    [
        ("/api/v1/installations/", {"status": "deleted"}, "status: must be one of active, suspended"),
        ("/api/v1/installations/{eshop_id}/jobs/", {"status": "done"}, "status: must be one of requested"),
        ("/api/v1/installations/{eshop_id}/jobs/", {"resource": "products"}, "resource: must be one of orders"),
        ("/api/v1/installations/{eshop_id}/jobs/", {"mode": "full"}, "mode: must be one of snapshot"),
        ("/api/v1/webhook-deliveries/", {"status": "done"}, "status: must be one of received"),
        ("/api/v1/webhook-deliveries/", {"eshop_id": "abc"}, "eshop_id: must be a numeric e-shop id"),
        ("/api/v1/webhook-deliveries/", {"event": "x" * 65}, "event: must be an event name"),
    ],
)
def test_a_bad_filter_is_400_with_a_message(
    staff_client: Client, tenants: tuple[Installation, Installation], path: str, query: dict[str, str], message: str
) -> None:
    response = staff_client.get(url(path), query)

    assert_error(response, 400, "invalid")
    assert response.json()["message"].startswith(message)
    assert list(response.json()["details"]) == list(query)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"resource": "products", "mode": "snapshot"}, "resource"),
        ({"resource": "orders", "mode": "full"}, "mode"),
        ({"resource": "orders"}, "mode"),
        ({}, "resource"),
    ],
)
def test_a_bad_sync_request_is_400_and_starts_nothing(
    staff_client: Client, tenants: tuple[Installation, Installation], body: dict[str, str], field: str
) -> None:
    jobs_before = SyncJob.objects.count()

    response = staff_client.post(url("/api/v1/installations/{eshop_id}/sync/"), body, content_type="application/json")

    assert_error(response, 400, "invalid")
    assert response.json()["message"].startswith(f"{field}: ")
    assert field in response.json()["details"]
    assert SyncJob.objects.count() == jobs_before


def test_a_sync_request_that_is_not_json_is_400(
    staff_client: Client, tenants: tuple[Installation, Installation]
) -> None:
    response = staff_client.post(
        url("/api/v1/installations/{eshop_id}/sync/"), "{not json", content_type="application/json"
    )

    assert_error(response, 400, "parse_error")


def test_a_sync_request_of_another_media_type_is_415(
    staff_client: Client, tenants: tuple[Installation, Installation]
) -> None:
    response = staff_client.post(
        url("/api/v1/installations/{eshop_id}/sync/"), "resource=orders", content_type="text/plain"
    )

    assert_error(response, 415, "unsupported_media_type")


# ---------------------------------------------------------------------------
# Pagination
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("template", "key"), LISTS.items())
def test_every_list_is_paginated(
    staff_client: Client, tenants: tuple[Installation, Installation], template: str, key: str
) -> None:
    path = url(template)
    everything = staff_client.get(path, {"page_size": 500}).json()
    first = staff_client.get(path, {"page_size": 2}).json()
    second = staff_client.get(path, {"page_size": 2, "page": 2}).json()

    assert everything["count"] == first["count"] == second["count"] >= 3
    assert first["previous"] is None
    assert first["next"] == f"http://testserver{path}?page=2&page_size=2"
    assert second["previous"] == f"http://testserver{path}?page_size=2"
    assert [row[key] for row in first["results"] + second["results"]] == [row[key] for row in everything["results"][:4]]
    assert_error(staff_client.get(path, {"page": 999}), 404, "not_found")


def test_the_delivery_log_and_the_installations_are_paginated(
    staff_client: Client, tenants: tuple[Installation, Installation]
) -> None:
    deliveries = staff_client.get("/api/v1/webhook-deliveries/", {"page_size": 4}).json()
    installations = staff_client.get("/api/v1/installations/", {"page_size": 1, "page": 2}).json()

    assert (deliveries["count"], len(deliveries["results"])) == (6, 4)
    assert deliveries["next"].endswith("page=2&page_size=4")
    assert (installations["count"], [row["eshop_id"] for row in installations["results"]]) == (2, [OTHER_ESHOP_ID])


def test_page_size_is_capped_at_500(staff_client: Client, tenants: tuple[Installation, Installation]) -> None:
    for number in range(510):
        WebhookDelivery.objects.create(eshop_id=ESHOP_ID, event="order:create", event_instance=f"B{number}")

    body = staff_client.get("/api/v1/webhook-deliveries/", {"page_size": 100000}).json()

    assert (body["count"], len(body["results"])) == (516, 500)


# ---------------------------------------------------------------------------
# Filters, codes with `/`, tenants
# ---------------------------------------------------------------------------


def test_job_filters(staff_client: Client, tenants: tuple[Installation, Installation]) -> None:
    path = url("/api/v1/installations/{eshop_id}/jobs/")

    def statuses(**query: str) -> list[str]:
        return [row["status"] for row in staff_client.get(path, query).json()["results"]]

    assert statuses() == ["running", "failed", "completed"]
    assert statuses(status="failed") == ["failed"]
    assert statuses(resource="invoices") == ["running"]
    assert statuses(mode="snapshot", resource="orders") == ["failed", "completed"]
    assert statuses(mode="changes", status="completed") == []


def test_delivery_filters(staff_client: Client, tenants: tuple[Installation, Installation]) -> None:
    def rows(**query: Any) -> list[tuple[int, str, str]]:
        results = staff_client.get("/api/v1/webhook-deliveries/", query).json()["results"]
        return [(row["eshop_id"], row["event"], row["status"]) for row in results]

    assert rows(eshop_id=OTHER_ESHOP_ID) == [
        (OTHER_ESHOP_ID, "order:update", "processed"),
        (OTHER_ESHOP_ID, "invoice:create", "failed"),
        (OTHER_ESHOP_ID, "order:update", "rejected"),
    ]
    assert rows(eshop_id=ESHOP_ID, event="order:update") == [
        (ESHOP_ID, "order:update", "processed"),
        (ESHOP_ID, "order:update", "rejected"),
    ]
    assert rows(eshop_id=ESHOP_ID, status="failed") == [(ESHOP_ID, "invoice:create", "failed")]
    assert {row[0] for row in rows(status="rejected")} == {ESHOP_ID, OTHER_ESHOP_ID}
    assert_error(staff_client.get("/api/v1/webhook-deliveries/", {"eshop_id": UNKNOWN}), 404, "not_found")


def test_installation_filter(staff_client: Client, tenants: tuple[Installation, Installation]) -> None:
    tenants[1].transition_to(Installation.Status.SUSPENDED, cause="test")

    suspended = staff_client.get("/api/v1/installations/", {"status": "suspended"}).json()["results"]
    active = staff_client.get("/api/v1/installations/", {"status": "active"}).json()["results"]

    assert [row["eshop_id"] for row in suspended] == [OTHER_ESHOP_ID]
    assert [row["eshop_id"] for row in active] == [ESHOP_ID]


@pytest.mark.parametrize("resource", ["orders", "invoices"])
@pytest.mark.parametrize("encoded", [True, False])
def test_a_code_with_a_slash_is_found_in_its_own_eshop(
    staff_client: Client, tenants: tuple[Installation, Installation], resource: str, encoded: bool
) -> None:
    model: type[Order | Invoice] = Order if resource == "orders" else Invoice
    mine, theirs = tenants
    if resource == "invoices":
        for tenant in tenants:
            first = Invoice.objects.filter(installation=tenant).order_by("code")[0]
            Invoice.objects.filter(pk=first.pk).update(code="2026/INV/1")
    code = SLASHED if resource == "orders" else "2026/INV/1"
    in_path = code.replace("/", "%2F") if encoded else code

    own = staff_client.get(f"/api/v1/installations/{ESHOP_ID}/{resource}/{in_path}/").json()
    other = staff_client.get(f"/api/v1/installations/{OTHER_ESHOP_ID}/{resource}/{in_path}/").json()

    assert own["code"] == other["code"] == code
    assert own["data"] == model._default_manager.get(installation=mine, code=code).data
    assert other["data"] == model._default_manager.get(installation=theirs, code=code).data
    assert own["data"] != other["data"]


@pytest.mark.parametrize(("resource", "model"), [("orders", Order), ("invoices", Invoice)])
def test_a_second_tenant_s_documents_are_never_listed(
    staff_client: Client, tenants: tuple[Installation, Installation], resource: str, model: type[Order | Invoice]
) -> None:
    mine, _ = tenants

    listed = staff_client.get(f"/api/v1/installations/{ESHOP_ID}/{resource}/", {"page_size": 500}).json()["results"]

    live = model._default_manager.filter(installation=mine, deleted_at__isnull=True)
    assert sorted(row["code"] for row in listed) == sorted(live.values_list("code", flat=True))
    assert [row["data"] for row in listed] == [live.get(code=row["code"]).data for row in listed]


def test_a_second_tenant_s_jobs_are_never_listed(
    staff_client: Client, tenants: tuple[Installation, Installation]
) -> None:
    mine, theirs = tenants

    listed = staff_client.get(f"/api/v1/installations/{ESHOP_ID}/jobs/").json()["results"]

    assert {row["id"] for row in listed} == set(SyncJob.objects.filter(installation=mine).values_list("pk", flat=True))
    assert SyncJob.objects.filter(installation=theirs).exists()


def test_a_code_only_the_other_eshop_has_is_404(
    staff_client: Client, tenants: tuple[Installation, Installation]
) -> None:
    mine, theirs = tenants
    only_theirs = (
        Order.objects.filter(installation=theirs)
        .exclude(code__in=Order.objects.filter(installation=mine).values("code"))
        .values_list("code", flat=True)
        .first()
    )
    assert only_theirs

    response = staff_client.get(f"/api/v1/installations/{ESHOP_ID}/orders/{only_theirs.replace('/', '%2F')}/")

    assert_error(response, 404, "not_found")


# ---------------------------------------------------------------------------
# Throttling
# ---------------------------------------------------------------------------


def test_a_staff_user_over_the_rate_gets_429_with_the_error_body(
    staff_client: Client, tenants: tuple[Installation, Installation], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", {"user": "3/minute"})

    answers = [staff_client.get("/api/v1/installations/").status_code for _ in range(3)]
    throttled = staff_client.get(url("/api/v1/installations/{eshop_id}/orders/"))

    assert answers == [200, 200, 200]
    assert_error(throttled, 429, "throttled")
    assert int(throttled["Retry-After"]) > 0


def test_the_throttle_counts_each_staff_user_apart(
    staff_client: Client,
    django_user_model: Any,
    tenants: tuple[Installation, Installation],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", {"user": "2/minute"})
    colleague = django_user_model.objects.create_user("colleague", password="unused-password-5", is_staff=True)
    grant_platform_permissions(colleague)
    other_client = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=colleague).key}")

    for _ in range(3):
        staff_client.get("/api/v1/installations/")

    assert other_client.get("/api/v1/installations/").status_code == 200


def test_the_configured_rate_is_generous() -> None:
    assert UserRateThrottle().get_rate() == "1200/minute"
