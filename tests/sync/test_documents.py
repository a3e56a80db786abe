"""Shoptet objects → column values: odd values become null instead of failing an import; no code, no row."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from sync.documents import INVOICES, ORDERS, InvalidDocument, items_of, order_fields
from tests.fakes.shoptet import FakeShoptet


def test_the_mappings_fill_exactly_the_model_columns(fake_shoptet: FakeShoptet) -> None:
    fake_shoptet.add_eshop(1, orders=1, invoices=1)
    order = next(iter(fake_shoptet.eshop(1).orders.values()))
    invoice = next(iter(fake_shoptet.eshop(1).invoices.values()))

    assert set(ORDERS.fields(order)) == set(ORDERS.columns)
    assert set(INVOICES.fields(invoice)) == set(INVOICES.columns)
    assert set(items_of(order)[0]) == set(ORDERS.item_columns) == set(INVOICES.item_columns)


def test_a_minimal_order() -> None:
    assert order_fields({"code": "15/ZLU"}) == {
        "code": "15/ZLU",
        "guid": None,
        "status_id": None,
        "status_name": None,
        "email": None,
        "currency": None,
        "total_with_vat": None,
        "total_without_vat": None,
        "to_pay": None,
        "paid": None,
        "creation_time": None,
        "change_time": None,
        "item_count": None,
    }


def test_a_minimal_invoice() -> None:
    assert INVOICES.fields({"code": "FV/2026/0002", "items": []}) == {
        "code": "FV/2026/0002",
        "order_code": None,
        "is_valid": None,
        "var_symbol": None,
        "billing_method_id": None,
        "billing_method_name": None,
        "vat_mode": None,
        "due_date": None,
        "tax_date": None,
        "currency": None,
        "total_with_vat": None,
        "total_without_vat": None,
        "to_pay": None,
        "paid": None,
        "creation_time": None,
        "change_time": None,
        "item_count": 0,
    }


def test_empty_strings_from_shoptet_stay_empty_strings() -> None:
    values = order_fields({"code": "15/ZLU", "guid": "", "email": "", "status": {"id": 1, "name": ""}})

    assert (values["guid"], values["email"], values["status_name"]) == ("", "", "")


def test_odd_values_become_null() -> None:
    document = {
        "code": "E-2026001",
        "guid": None,
        "status": {"id": 2**40, "name": None},
        "price": {"withVat": "1e400", "withoutVat": "NaN", "toPay": "12,50", "currencyCode": "CZK"},
        "paid": "yes",
        "creationTime": "2026-02-30T10:00:00+0100",
        "changeTime": "2026-01-05T10:00:00",
        "email": 12,
        "items": [
            {
                "itemId": True,
                "itemType": "product",
                "amount": "2.000",
                "unitPrice": {"withVat": "100.00", "vatRate": "21.00"},
                "itemPrice": {"withVat": "200.00", "vatRate": "999999.00"},
            },
            "not an item",
        ],
    }

    values = order_fields(document)

    assert (values["status_id"], values["status_name"], values["email"]) == (None, None, None)
    assert (values["total_with_vat"], values["total_without_vat"], values["to_pay"]) == (None, None, None)
    assert (values["paid"], values["creation_time"], values["change_time"], values["item_count"]) == (
        None,
        None,
        None,
        1,
    )
    assert items_of(document) == [
        {
            "position": 0,
            "item_id": None,
            "item_type": "product",
            "code": "",
            "name": "",
            "amount": Decimal("2.000"),
            "unit_price_with_vat": Decimal("100.00"),
            "total_price_with_vat": Decimal("200.00"),
            "vat_rate": None,
        }
    ]


def test_times_keep_their_offset_and_dates_parse() -> None:
    values = INVOICES.fields(
        {"code": "FV/2026/0001", "changeTime": "2026-03-29T02:30:00+0200", "dueDate": "2026-04-12", "varSymbol": "7"}
    )

    assert values["change_time"] == datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    assert values["change_time"].utcoffset() == timedelta(hours=2)
    assert values["change_time"].tzinfo == timezone(timedelta(hours=2))
    assert (values["due_date"], values["tax_date"], values["var_symbol"]) == (date(2026, 4, 12), None, 7)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "expected a JSON object, got list"),
        ({"guid": "x"}, "the object has no code"),
        ({"code": 2026000001}, "the object has no code"),
        ({"code": ""}, "the object has no code"),
        ({"code": "9" * 256}, "is longer than 255 characters"),
    ],
)
def test_no_usable_code_is_no_document(document: object, message: str) -> None:
    with pytest.raises(InvalidDocument, match=message):
        ORDERS.fields(document)  # type: ignore[arg-type]
