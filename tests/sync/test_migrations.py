"""Rows mirrored before document columns were nullable get Shoptet's nulls back from their stored object."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.utils import timezone

from installations.models import Installation
from sync.models import Invoice, Order

pytestmark = pytest.mark.django_db

document_nulls = importlib.import_module("sync.migrations.0003_document_nulls")


def legacy_order(installation: Installation, code: str, data: dict) -> Order:
    """An order as the mirror stored it before: `""` and 0 items wherever Shoptet had nothing."""
    return Order.objects.create(
        installation=installation,
        code=code,
        guid="",
        status_name="",
        email="",
        currency="",
        item_count=0,
        data={"code": code, **data},
        synced_at=timezone.now(),
    )


def test_empty_strings_become_null_where_shoptet_sent_null_or_nothing(
    installation: Installation, other_installation: Installation
) -> None:
    nulls = legacy_order(installation, "2026000001", {"guid": None, "email": None, "status": None, "price": None})
    missing = legacy_order(other_installation, "2026000002", {"status": {"id": -1, "name": None}})
    empty = legacy_order(
        installation,
        "2026000003",
        {"guid": "", "email": "", "status": {"id": 1, "name": ""}, "price": {"currencyCode": ""}, "items": []},
    )
    invoice = Invoice.objects.create(
        installation=installation,
        code="2026000001",
        order_code="",
        billing_method_name="",
        vat_mode="",
        currency="",
        data={"code": "2026000001", "orderCode": None, "billingMethod": None, "price": {"currencyCode": None}},
        synced_at=timezone.now(),
    )

    document_nulls.restore_nulls(apps, None)

    columns = ("guid", "status_name", "email", "currency", "item_count")
    for order in (nulls, missing):
        assert Order.objects.values_list(*columns).get(pk=order.pk) == (None, None, None, None, None)
    assert Order.objects.values_list(*columns).get(pk=empty.pk) == ("", "", "", "", 0)
    assert Invoice.objects.values_list("order_code", "billing_method_name", "vat_mode", "currency").get(
        pk=invoice.pk
    ) == (None, None, None, None)
