"""The REST API's order and invoice fields say what Shoptet says: null where Shoptet sends null.

The fake builds orders and invoices with null in every field that Shoptet's schema marks nullable (and,
in the "fields" variant, keeps nullable objects such as `status` with null fields inside). They come in
through the real sync paths, a snapshot import and a webhook's detail fetch, and every REST field is
compared with the fake object's value.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.test import Client

from installations.models import Installation
from tests.conftest import ESHOP_ID, OTHER_ESHOP_ID
from tests.fakes.shoptet import FakeShoptet, schema
from tests.sync.conftest import deliver, import_snapshot

pytestmark = pytest.mark.django_db

BASE = f"/api/v1/installations/{ESHOP_ID}"
OTHER = f"/api/v1/installations/{OTHER_ESHOP_ID}"
NULLS = ["objects", "fields"]

# The REST fields that end up null, by variant: those whose Shoptet value is nullable in the spec.
# `status_id` is null only with the whole status object; the spec never lets `status.id` be null.
NULL_ORDER_FIELDS = {
    "objects": {"status_id", "status_name", "total_with_vat", "paid", "email", "creation_time", "change_time"},
    "fields": {"status_name", "total_with_vat", "paid", "email", "creation_time", "change_time"},
}
NULL_INVOICE_FIELDS = {"order_code", "total_with_vat", "creation_time", "change_time"}


def rest_time(value: str | None) -> str | None:
    """Shoptet's `2024-01-08T15:13:39+0100` as the REST API writes it (UTC, `Z`)."""
    if value is None:
        return None
    moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z").astimezone(UTC)
    return moment.isoformat().replace("+00:00", "Z")


def expected_order(document: dict[str, Any]) -> dict[str, Any]:
    """The REST order that INTERFACE.md promises for this Shoptet object."""
    status = document["status"]
    return {
        "code": document["code"],
        "guid": document["guid"],
        "status_id": None if status is None else status["id"],
        "status_name": None if status is None else status["name"],
        "currency": document["price"]["currencyCode"],
        "total_with_vat": document["price"]["withVat"],
        "paid": document["paid"],
        "email": document["email"],
        "creation_time": rest_time(document["creationTime"]),
        "change_time": rest_time(document["changeTime"]),
        "item_count": len(document["items"]),
        "data": document,
    }


def expected_invoice(document: dict[str, Any]) -> dict[str, Any]:
    return {
        "code": document["code"],
        "order_code": document["orderCode"],
        "is_valid": document["isValid"],
        "var_symbol": document["varSymbol"],
        "currency": document["price"]["currencyCode"],
        "total_with_vat": document["price"]["withVat"],
        "creation_time": rest_time(document["creationTime"]),
        "change_time": rest_time(document["changeTime"]),
        "data": document,
    }


def rest_rows(client: Client, path: str) -> dict[str, dict[str, Any]]:
    response = client.get(path, {"page_size": 500})
    assert response.status_code == 200
    return {row["code"]: row for row in response.json()["results"]}


def detail(client: Client, path: str, code: str) -> dict[str, Any]:
    response = client.get(f"{path}{code.replace('/', '%2F')}/")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def null_fields(row: dict[str, Any]) -> set[str]:
    return {field for field, value in row.items() if value is None}


def create_nulled(fake: FakeShoptet, nulls: schema.Nulls) -> tuple[str, str]:
    """A nulled order and a nulled invoice in the fake; both are still valid Shoptet objects."""
    order_code = fake.create_order(ESHOP_ID, webhook=False, nulls=nulls)
    invoice_code = fake.create_invoice(ESHOP_ID, order_code=None, webhook=False, nulls=nulls)
    order = fake.order_detail(ESHOP_ID, order_code, ("notes", "shippingDetails"))
    invoice = fake.invoice_detail(ESHOP_ID, invoice_code)
    assert schema.validate(schema.schema("order"), order) == []
    assert schema.validate(schema.schema("invoice"), invoice) == []
    return order_code, invoice_code


def test_nulled_objects_hold_null_in_every_nullable_field_of_the_spec(fake_shoptet: FakeShoptet) -> None:
    fake_shoptet.add_eshop(ESHOP_ID)
    order_code = fake_shoptet.create_order(ESHOP_ID, webhook=False, nulls="objects")
    order = fake_shoptet.eshops[ESHOP_ID].orders[order_code]

    order_schema = schema.schema("order")
    nullable = {key for key, node in order_schema["properties"].items() if schema.nullable(node)}
    assert {"email", "status", "paid", "creationTime", "changeTime"} <= nullable
    assert {key for key, value in order.items() if value is None} == nullable
    price_schema = order_schema["properties"]["price"]
    assert {key for key, value in order["price"].items() if value is None} == {
        key for key, node in price_schema["properties"].items() if schema.nullable(node)
    }
    assert order["code"] == order_code and order["price"]["currencyCode"] is not None


@pytest.mark.parametrize("nulls", NULLS)
def test_snapshot_import_mirrors_shoptets_nulls(
    staff_client: Client,
    onboarded: Installation,
    other_onboarded: Installation,
    jobs_on_demand: FakeShoptet,
    nulls: schema.Nulls,
) -> None:
    fake = jobs_on_demand
    order_code, invoice_code = create_nulled(fake, nulls)
    for installation in (onboarded, other_onboarded):
        import_snapshot(fake, installation, "orders")
        import_snapshot(fake, installation, "invoices")

    order = detail(staff_client, f"{BASE}/orders/", order_code)
    invoice = detail(staff_client, f"{BASE}/invoices/", invoice_code)

    assert order == expected_order(fake.order_detail(ESHOP_ID, order_code, ("notes", "shippingDetails")))
    assert invoice == expected_invoice(fake.invoice_detail(ESHOP_ID, invoice_code))
    assert null_fields(order) == NULL_ORDER_FIELDS[nulls]
    assert null_fields(invoice) == NULL_INVOICE_FIELDS
    assert rest_rows(staff_client, f"{BASE}/orders/")[order_code] == order
    assert rest_rows(staff_client, f"{BASE}/invoices/")[invoice_code] == invoice
    assert order_code not in rest_rows(staff_client, f"{OTHER}/orders/")
    assert invoice_code not in rest_rows(staff_client, f"{OTHER}/invoices/")


@pytest.mark.parametrize("nulls", NULLS)
def test_webhook_detail_fetch_mirrors_shoptets_nulls(
    client: Client,
    staff_client: Client,
    onboarded: Installation,
    jobs_on_demand: FakeShoptet,
    process,  # type: ignore[no-untyped-def]
    nulls: schema.Nulls,
) -> None:
    fake = jobs_on_demand
    import_snapshot(fake, onboarded, "orders")
    import_snapshot(fake, onboarded, "invoices")
    order_code, invoice_code = create_nulled(fake, nulls)

    assert deliver(client, onboarded, "order:create", order_code) == 200
    assert deliver(client, onboarded, "invoice:create", invoice_code) == 200
    process()

    order = detail(staff_client, f"{BASE}/orders/", order_code)
    invoice = detail(staff_client, f"{BASE}/invoices/", invoice_code)
    assert order == expected_order(fake.order_detail(ESHOP_ID, order_code, ("notes", "shippingDetails")))
    assert invoice == expected_invoice(fake.invoice_detail(ESHOP_ID, invoice_code))
    assert null_fields(order) == NULL_ORDER_FIELDS[nulls]
    assert null_fields(invoice) == NULL_INVOICE_FIELDS


def test_realistic_values_are_mirrored_as_shoptet_sends_them(
    staff_client: Client, onboarded: Installation, other_onboarded: Installation, jobs_on_demand: FakeShoptet
) -> None:
    fake = jobs_on_demand
    order_code = sorted(fake.eshops[ESHOP_ID].orders)[0]
    invoice_code = fake.create_invoice(ESHOP_ID, order_code=order_code, webhook=False)
    for installation in (onboarded, other_onboarded):
        import_snapshot(fake, installation, "orders")
        import_snapshot(fake, installation, "invoices")

    orders = rest_rows(staff_client, f"{BASE}/orders/")
    invoices = rest_rows(staff_client, f"{BASE}/invoices/")

    shop = fake.eshops[ESHOP_ID]
    assert orders == {
        code: expected_order(fake.order_detail(ESHOP_ID, code, ("notes", "shippingDetails"))) for code in shop.orders
    }
    assert invoices == {code: expected_invoice(fake.invoice_detail(ESHOP_ID, code)) for code in shop.invoices}
    # The generator fills these for every document: the comparison above is one of real values.
    assert all(null_fields(row) <= {"paid"} for row in orders.values())
    assert all(null_fields(row) <= {"order_code"} for row in invoices.values())
    assert (invoices[invoice_code]["order_code"], null_fields(invoices[invoice_code])) == (order_code, set())
    other = fake.eshops[OTHER_ESHOP_ID]
    assert rest_rows(staff_client, f"{OTHER}/orders/") == {
        code: expected_order(fake.order_detail(OTHER_ESHOP_ID, code, ("notes", "shippingDetails")))
        for code in other.orders
    }
