"""Shoptet's order and invoice objects turned into column values, and what differs between the two resources.

Shoptet sends prices as strings with two decimals, amounts with three, times as `2024-01-08T15:13:39+0100`
and dates as `YYYY-MM-DD`. A document column says what Shoptet says: null where the object has null or
no value at all. A value that does not parse is stored as null too (the full object is kept in `data`
anyway) instead of failing the whole import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings

from shoptet_api.client import ShoptetClient
from sync.models import Document, DocumentItem, Invoice, InvoiceItem, Order, OrderItem

# Columns hold up to 18 integer digits; a larger number is no price.
_DECIMAL_LIMIT = Decimal(10) ** 17
_RATE_LIMIT = Decimal(10) ** 5


class InvalidDocument(ValueError):
    """A line or answer that is not a Shoptet document at all (no object, no code)."""


def decimal(value: Any, limit: Decimal = _DECIMAL_LIMIT) -> Decimal | None:
    if value.__class__ is not str:
        if value is None or isinstance(value, bool):
            return None
        value = str(value)
    try:
        number = Decimal(value)
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() and -limit < number < limit else None


def moment(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def day(value: Any) -> date | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def integer(value: Any, bits: int = 64) -> int | None:
    if value.__class__ is not int:
        if isinstance(value, str) and value.lstrip("-").isdigit():
            value = int(value)
        else:
            return None  # also bool, a subclass of int
    bound: int = 1 << (bits - 1)
    return value if -bound <= value < bound else None


def text(value: Any, length: int) -> str | None:
    return value[:length] if isinstance(value, str) else None


def item_text(value: Any, length: int) -> str:
    """An item's text column: items are not part of the REST interface and keep `""` for a missing value."""
    return text(value, length) or ""


def boolean(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _section(document: dict[str, Any], key: str) -> dict[str, Any]:
    value = document.get(key)
    return value if isinstance(value, dict) else {}


def code_of(document: Any) -> str:
    """The document's code; raises InvalidDocument when there is none a row could be keyed on."""
    if not isinstance(document, dict):
        raise InvalidDocument(f"expected a JSON object, got {type(document).__name__}")
    code = document.get("code")
    if not isinstance(code, str) or not code:
        raise InvalidDocument("the object has no code")
    if len(code) > 255:
        raise InvalidDocument(f"the code {code[:40]!r}… is longer than 255 characters")
    return code


def _totals(document: dict[str, Any]) -> dict[str, Any]:
    price = _section(document, "price")
    return {
        "currency": text(price.get("currencyCode"), 8),
        "total_with_vat": decimal(price.get("withVat")),
        "total_without_vat": decimal(price.get("withoutVat")),
        "to_pay": decimal(price.get("toPay")),
        "paid": boolean(document.get("paid")),
        "creation_time": moment(document.get("creationTime")),
        "change_time": moment(document.get("changeTime")),
        "item_count": _item_count(document),
    }


def _item_count(document: dict[str, Any]) -> int | None:
    return len(_items(document)) if isinstance(document.get("items"), list) else None


def _items(document: dict[str, Any]) -> list[dict[str, Any]]:
    items = document.get("items")
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def order_fields(document: dict[str, Any]) -> dict[str, Any]:
    """Column values of `sync.Order` from a Shoptet order (detail or snapshot line); `data` excluded."""
    code = code_of(document)
    status = _section(document, "status")
    return {
        "code": code,
        "guid": text(document.get("guid"), 64),
        "status_id": integer(status.get("id"), bits=32),
        "status_name": text(status.get("name"), 255),
        "email": text(document.get("email"), 254),
        **_totals(document),
    }


def invoice_fields(document: dict[str, Any]) -> dict[str, Any]:
    """Column values of `sync.Invoice` from a Shoptet invoice; `data` excluded."""
    code = code_of(document)
    billing_method = _section(document, "billingMethod")
    return {
        "code": code,
        "order_code": text(document.get("orderCode"), 255),
        "is_valid": boolean(document.get("isValid")),
        "var_symbol": integer(document.get("varSymbol")),
        "billing_method_id": integer(billing_method.get("id"), bits=32),
        "billing_method_name": text(billing_method.get("name"), 64),
        "vat_mode": text(document.get("vatMode"), 64),
        "due_date": day(document.get("dueDate")),
        "tax_date": day(document.get("taxDate")),
        **_totals(document),
    }


def item_fields(item: dict[str, Any], position: int) -> dict[str, Any]:
    """Column values of an order or invoice item (both share Shoptet's item shape for these fields)."""
    unit_price = _section(item, "unitPrice")
    item_price = _section(item, "itemPrice")
    return {
        "position": position,
        "item_id": integer(item.get("itemId")),
        "item_type": item_text(item.get("itemType"), 64),
        "code": item_text(item.get("code"), 255),
        "name": item_text(item.get("name"), 255),
        "amount": decimal(item.get("amount")),
        "unit_price_with_vat": decimal(unit_price.get("withVat")),
        "total_price_with_vat": decimal(item_price.get("withVat")),
        "vat_rate": decimal(item_price.get("vatRate") or unit_price.get("vatRate"), limit=_RATE_LIMIT),
    }


def items_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Column values of every item of a document, in Shoptet's order."""
    return [item_fields(item, position) for position, item in enumerate(_items(document))]


def _fetch_order(client: ShoptetClient, code: str) -> dict[str, Any]:
    return client.get_order(code, include=list(settings.SYNC_ORDER_INCLUDE))


def _fetch_invoice(client: ShoptetClient, code: str) -> dict[str, Any]:
    return client.get_invoice(code)


@dataclass(frozen=True)
class Resource:
    """Everything that differs between syncing orders and syncing invoices."""

    name: str  # "orders" or "invoices": also the path segment of Shoptet's endpoints
    model: type[Document]
    item_model: type[DocumentItem]
    parent_field: str  # the item's foreign key to its document
    fields: Callable[[dict[str, Any]], dict[str, Any]]
    fetch: Callable[[ShoptetClient, str], dict[str, Any]]
    # Shoptet's `itemsPerPage` maximum of GET /api/<name>/changes.
    changes_per_page: int

    @property
    def columns(self) -> list[str]:
        """Document columns filled from Shoptet's object, `code` first, in model order."""
        skip = {"id", "installation", "code", "data", "deleted_at", "synced_at"}
        return ["code", *(f.name for f in self.model._meta.concrete_fields if f.name not in skip)]

    @property
    def item_columns(self) -> list[str]:
        skip = {"id", "installation", self.parent_field}
        return [f.name for f in self.item_model._meta.concrete_fields if f.name not in skip]

    def snapshot_params(self) -> dict[str, str]:
        include = list(settings.SYNC_ORDER_INCLUDE) if self.name == "orders" else []
        return {"include": ",".join(include)} if include else {}


ORDERS = Resource(
    name="orders",
    model=Order,
    item_model=OrderItem,
    parent_field="order",
    fields=order_fields,
    fetch=_fetch_order,
    changes_per_page=1000,
)
INVOICES = Resource(
    name="invoices",
    model=Invoice,
    item_model=InvoiceItem,
    parent_field="invoice",
    fields=invoice_fields,
    fetch=_fetch_invoice,
    changes_per_page=20,
)
RESOURCES: dict[str, Resource] = {ORDERS.name: ORDERS, INVOICES.name: INVOICES}


def resource_named(name: str) -> Resource:
    try:
        return RESOURCES[name]
    except KeyError:
        raise ValueError(f"unknown resource {name!r}; expected one of {', '.join(RESOURCES)}") from None
