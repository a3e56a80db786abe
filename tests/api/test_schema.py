"""The OpenAPI schema describes the API as it answers: schemathesis finds no 500 and no response off the schema."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from installations.models import Installation
from sync.models import SyncJob
from tests.api.conftest import SLASHED

pytestmark = pytest.mark.django_db

SCHEMA = "/api/v1/schema/"


OPERATIONS = [
    ("GET", "/api/v1/installations/"),
    ("GET", "/api/v1/installations/{eshop_id}/"),
    ("GET", "/api/v1/installations/{eshop_id}/orders/"),
    ("GET", "/api/v1/installations/{eshop_id}/orders/{code}/"),
    ("GET", "/api/v1/installations/{eshop_id}/invoices/"),
    ("GET", "/api/v1/installations/{eshop_id}/invoices/{code}/"),
    ("GET", "/api/v1/installations/{eshop_id}/jobs/"),
    ("POST", "/api/v1/installations/{eshop_id}/sync/"),
    ("GET", "/api/v1/webhook-deliveries/"),
]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def pinned(path: str, tenant: Installation) -> dict[str, Any]:
    """Path and query values naming the tenant's real rows, so that generated requests reach its data."""
    if "{eshop_id}" not in path:
        return {"query": {"eshop_id": tenant.eshop_id}} if "webhook-deliveries" in path else {}
    path_parameters: dict[str, Any] = {"eshop_id": tenant.eshop_id}
    if "{code}" in path:
        path_parameters["code"] = SLASHED
    return {"path_parameters": path_parameters}


# Deterministic and bounded for CI: the same examples on every run, at most 25 per operation and variant.
VARIANTS = {
    # valid input aimed at the first tenant's rows (the second tenant's rows are there too)
    "tenant": lambda operation, path, tenant: operation.as_strategy(**pinned(path, tenant)),
    # valid input anywhere (mostly unknown e-shops and codes)
    "positive": lambda operation, path, tenant: operation.as_strategy(),
    # input that breaks the schema: wrong types, unknown values, a missing or wrong token
    "negative": lambda operation, path, tenant: operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
}


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_the_api_keeps_to_its_schema(
    api_schema: Any, staff_token: str, tenants: tuple[Installation, Installation], method: str, path: str
) -> None:
    """Never a 500, and every answer (status, content type, body, headers) as the schema documents it."""
    operation = api_schema[path][method]
    for variant, strategy_of in VARIANTS.items():

        @given(case=strategy_of(operation, path, tenants[0]))
        @settings(
            max_examples=25,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            case.call_and_validate(headers={"Authorization": f"Token {staff_token}"}, checks=CHECKS)

        try:
            call()
        except Exception as failure:
            failure.add_note(f"variant: {variant}")
            raise


def test_the_schema_is_for_staff_only(client: Client, staff_client: Client, admin_client: Client) -> None:
    anonymous = client.get(SCHEMA, {"format": "json"})
    by_token = staff_client.get(SCHEMA, {"format": "json"})
    by_session = admin_client.get(SCHEMA, {"format": "json"})

    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "not_authenticated"
    assert by_token.status_code == by_session.status_code == 200
    paths = set(by_token.json()["paths"])
    assert paths == {
        "/api/v1/installations/",
        "/api/v1/installations/{eshop_id}/",
        "/api/v1/installations/{eshop_id}/orders/",
        "/api/v1/installations/{eshop_id}/orders/{code}/",
        "/api/v1/installations/{eshop_id}/invoices/",
        "/api/v1/installations/{eshop_id}/invoices/{code}/",
        "/api/v1/installations/{eshop_id}/jobs/",
        "/api/v1/installations/{eshop_id}/sync/",
        "/api/v1/webhook-deliveries/",
    }


def test_the_schema_documents_filters_and_the_error_body(staff_client: Client) -> None:
    document = staff_client.get(SCHEMA, {"format": "json"}).json()

    deliveries = document["paths"]["/api/v1/webhook-deliveries/"]["get"]
    parameters = {parameter["name"]: parameter["schema"] for parameter in deliveries["parameters"]}
    assert set(parameters) == {"eshop_id", "event", "status", "page", "page_size"}
    assert set(parameters["status"]["enum"]) == {"received", "processed", "failed", "rejected", "ignored"}
    jobs = document["paths"]["/api/v1/installations/{eshop_id}/jobs/"]["get"]
    assert {parameter["name"] for parameter in jobs["parameters"]} == {
        "eshop_id",
        "resource",
        "mode",
        "status",
        "page",
        "page_size",
    }
    sync = document["paths"]["/api/v1/installations/{eshop_id}/sync/"]["post"]
    assert set(sync["responses"]) == {"202", "400", "401", "403", "404", "409", "429"}
    assert sync["responses"]["409"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert set(document["components"]["schemas"]["Error"]["properties"]) == {"error", "message", "details"}
    assert document["components"]["securitySchemes"]["tokenAuth"]["in"] == "header"


def test_the_browsable_ui_serves_its_own_assets(client: Client, admin_client: Client) -> None:
    anonymous = client.get("/api/v1/schema/ui/")
    page = admin_client.get("/api/v1/schema/ui/")

    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/admin/login/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower()
    assert "/api/v1/schema/" in html


def test_jobs_started_by_the_run_stay_with_their_tenant(
    staff_client: Client, tenants: tuple[Installation, Installation]
) -> None:
    mine, theirs = tenants
    before = SyncJob.objects.filter(installation=theirs).count()

    response = staff_client.post(
        f"/api/v1/installations/{mine.eshop_id}/sync/",
        {"resource": "invoices", "mode": "snapshot"},
        content_type="application/json",
    )

    assert response.status_code == 202
    assert SyncJob.objects.get(pk=response.json()["id"]).installation == mine
    assert SyncJob.objects.filter(installation=theirs).count() == before


# INTERFACE.md, word for word.
INTERFACE_FIELDS = {
    "Installation": "eshop_id eshop_url name contact_email status installed_at uninstalled_at webhooks_registered "
    "last_webhook_at",
    "Order": "code guid status_id status_name currency total_with_vat paid email creation_time change_time item_count "
    "data",
    "Invoice": "code order_code is_valid var_symbol currency total_with_vat creation_time change_time data",
    "SyncJob": "id resource mode shoptet_job_id status created_at finished_at imported error",
    "WebhookDelivery": "id eshop_id event event_instance event_created received_at signature_valid status attempts "
    "error",
}
# Fields added after INTERFACE.md's, which stays a prefix (additions are fine, renames not).
ADDED_FIELDS = {"WebhookDelivery": "body_length body_sha256 body_truncated"}
INTERFACE_STATUSES = {
    "InstallationStatusEnum": "active suspended uninstalled terminated",
    "JobStatusEnum": "requested running importing completed failed",
    "DeliveryStatusEnum": "received processed failed rejected ignored",
}


def test_the_schema_has_exactly_the_interface_s_fields_and_statuses(staff_client: Client) -> None:
    components = staff_client.get(SCHEMA, {"format": "json"}).json()["components"]["schemas"]

    for name, fields in INTERFACE_FIELDS.items():
        assert list(components[name]["properties"]) == fields.split() + ADDED_FIELDS.get(name, "").split(), name
    for name, statuses in INTERFACE_STATUSES.items():
        assert set(components[name]["enum"]) == set(statuses.split()), name
    assert components["Order"]["properties"]["total_with_vat"]["type"] == "string"
    assert components["Installation"]["properties"]["webhooks_registered"] == {
        "type": "array",
        "items": {"type": "string"},
        "readOnly": True,
    }
    assert components["SyncRequest"]["required"] == ["mode", "resource"]
