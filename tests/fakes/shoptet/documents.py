"""Orders and invoices: the stored data, what changes it, and the Orders and Invoices endpoints."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import jobs, params, schema
from .clock import format_datetime
from .data import CANCELLED_STATUS_ID, ORDER_STATUSES
from .messages import ApiError, Request
from .state import Change, FakeEshop

if TYPE_CHECKING:
    from .fake import FakeShoptet

# Sections of an order that appear only when asked for with `include` (spec, `GET /api/orders/{code}`).
ORDER_SECTIONS = {"notes": "notes", "shippingdetails": "shippingDetails", "paymenttransactions": "paymentTransactions"}
ORDER_ITEM_SECTIONS = {
    "images": ("mainImage",),
    "stocklocation": ("stockLocation",),
    "surchargeparameters": ("surchargeParameters", "specificSurchargeParameters", "surchargeParametersTexts"),
    "productflags": ("productFlags",),
}
INVOICE_ITEM_SECTIONS = {"surchargeparameters": ("surchargeParameters", "specificSurchargeParameters")}


@dataclass(frozen=True)
class Kind:
    """What differs between orders and invoices."""

    name: str  # "order" or "invoice"
    plural: str
    list_default: int
    list_max: int
    changes_default: int
    changes_max: int

    def store(self, eshop: FakeEshop) -> dict[str, dict[str, Any]]:
        return eshop.orders if self.name == "order" else eshop.invoices

    def changes(self, eshop: FakeEshop) -> dict[str, Change]:
        return eshop.order_changes if self.name == "order" else eshop.invoice_changes


# Paging limits per the spec: orders list 50/50, order changes 20/1000, invoices list 20/1000,
# invoice changes use the shared parameter "default and max 20".
ORDERS = Kind("order", "orders", 50, 50, 20, 1000)
INVOICES = Kind("invoice", "invoices", 20, 1000, 20, 20)


# -- views --------------------------------------------------------------------------------------------------
def order_view(order: dict[str, Any], includes: set[str]) -> dict[str, Any]:
    """The detail object (`data.order`, also one snapshot line) with only the requested sections."""
    view = copy.deepcopy(order)
    for include, key in ORDER_SECTIONS.items():
        if include not in includes:
            view.pop(key, None)
    _strip_item_sections(view, ORDER_ITEM_SECTIONS, includes)
    return view


def invoice_view(invoice: dict[str, Any], includes: set[str]) -> dict[str, Any]:
    view = copy.deepcopy(invoice)
    _strip_item_sections(view, INVOICE_ITEM_SECTIONS, includes)
    return view


def _strip_item_sections(view: dict[str, Any], sections: Mapping[str, tuple[str, ...]], includes: set[str]) -> None:
    for include, keys in sections.items():
        if include in includes:
            continue
        for item in view["items"]:
            for key in keys:
                item.pop(key, None)


def order_list_item(order: dict[str, Any]) -> dict[str, Any]:
    item = {
        **order,
        "fullName": order["billingAddress"]["fullName"],
        "company": order["billingAddress"]["company"],
        "remark": (order.get("notes") or {}).get("customerRemark"),
    }
    return schema.shape("orderListItem", item)


def invoice_list_item(invoice: dict[str, Any]) -> dict[str, Any]:
    item = {
        **invoice,
        "billCompany": invoice["billingAddress"]["company"],
        "billFullName": invoice["billingAddress"]["fullName"],
    }
    return schema.shape("invoiceListItem", item)


# -- filters ------------------------------------------------------------------------------------------------
Check = Callable[[dict[str, Any]], bool]


def _time(value: str | None) -> datetime | None:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z") if value else None


def _within(field: str, bound: datetime, *, lower: bool) -> Check:
    def check(document: dict[str, Any]) -> bool:
        value = _time(document[field])
        return value is None or (value >= bound if lower else value <= bound)

    return check


def _equals_ignoring_case(key: str, wanted: str) -> Check:
    return lambda document: str(document[key] or "").lower() == wanted.lower()


def _time_filters(query: dict[str, str]) -> list[Check]:
    checks: list[Check] = []
    for field in ("creationTime", "changeTime"):
        lower, upper = params.moment(query, f"{field}From"), params.moment(query, f"{field}To")
        if lower is not None:
            checks.append(_within(field, lower, lower=True))
        if upper is not None:
            checks.append(_within(field, upper, lower=False))
    return checks


def _order_filters(query: dict[str, str]) -> list[Check]:
    checks = _time_filters(query) + _code_filters(query)
    status_id = params.integer(query, "statusId")
    if status_id is not None:
        checks.append(lambda order: (order["status"] or {}).get("id") == status_id)
    for key in ("email", "phone", "customerGuid"):
        if query.get(key):
            checks.append(_equals_ignoring_case(key, query[key]))
    if query.get("productCode"):
        code = query["productCode"]
        checks.append(lambda order: any(item["code"] == code for item in order["items"]))
    if query.get("shippingGuid"):
        checks.append(lambda order: (order["shipping"] or {}).get("guid") == query["shippingGuid"])
    if query.get("paymentMethodGuid"):
        checks.append(lambda order: (order["paymentMethod"] or {}).get("guid") == query["paymentMethodGuid"])
    return checks


def _invoice_filters(query: dict[str, str]) -> list[Check]:
    checks = _time_filters(query) + _code_filters(query)
    is_valid = params.boolean(query, "isValid")
    if is_valid is not None:
        checks.append(lambda invoice: invoice["isValid"] is is_valid)
    if query.get("orderCode"):
        checks.append(lambda invoice: invoice["orderCode"] == query["orderCode"])
    var_symbol = params.integer(query, "varSymbol")
    if var_symbol is not None:
        checks.append(lambda invoice: invoice["varSymbol"] == var_symbol)
    return checks


def _code_filters(query: dict[str, str]) -> list[Check]:
    """`codeFrom`/`codeTo` compare codes as strings."""
    checks: list[Check] = []
    if query.get("codeFrom"):
        checks.append(lambda doc: doc["code"] >= query["codeFrom"])
    if query.get("codeTo"):
        checks.append(lambda doc: doc["code"] <= query["codeTo"])
    return checks


def select(kind: Kind, eshop: FakeEshop, query: dict[str, str]) -> list[dict[str, Any]]:
    """Documents matching the filters, newest first; `orderCodes` (orders only) disables the other filters."""
    store = kind.store(eshop)
    wanted = params.codes(query, "orderCodes") if kind is ORDERS else None
    if wanted is not None:
        return [store[code] for code in wanted if code in store]
    checks = _order_filters(query) if kind is ORDERS else _invoice_filters(query)
    documents = [doc for doc in store.values() if all(check(doc) for check in checks)]
    return sorted(documents, key=lambda doc: (doc["creationTime"] or "", doc["code"]), reverse=True)


# -- endpoints ----------------------------------------------------------------------------------------------
def list_orders(fake: FakeShoptet, request: Request, eshop: FakeEshop) -> tuple[int, Any]:
    return _list(fake, request, eshop, ORDERS, order_list_item)


def list_invoices(fake: FakeShoptet, request: Request, eshop: FakeEshop) -> tuple[int, Any]:
    return _list(fake, request, eshop, INVOICES, invoice_list_item)


def _list(
    fake: FakeShoptet, request: Request, eshop: FakeEshop, kind: Kind, to_item: Callable[[dict[str, Any]], Any]
) -> tuple[int, Any]:
    with fake.state.lock:
        documents = select(kind, eshop, request.query)
        page, paginator = params.paginate(documents, request.query, kind.list_default, kind.list_max)
        return 200, {kind.plural: [to_item(doc) for doc in page], "paginator": paginator}


def get_order(fake: FakeShoptet, request: Request, eshop: FakeEshop) -> tuple[int, Any]:
    code = request.params["code"]
    with fake.state.lock:
        order = eshop.orders.get(code)
        if order is None:
            raise ApiError(404, "order-not-found", f'Order with code "{code}" not found.', code)
        return 200, {"order": order_view(order, params.includes(request.query))}


def get_invoice(fake: FakeShoptet, request: Request, eshop: FakeEshop) -> tuple[int, Any]:
    code = request.params["code"]
    with fake.state.lock:
        invoice = eshop.invoices.get(code)
        if invoice is None:
            raise ApiError(404, "invoice-not-found", f'Invoice with code "{code}" not found.', code)
        return 200, {"invoice": invoice_view(invoice, params.includes(request.query))}


def order_changes(fake: FakeShoptet, request: Request, eshop: FakeEshop) -> tuple[int, Any]:
    return _changes(fake, request, eshop, ORDERS)


def invoice_changes(fake: FakeShoptet, request: Request, eshop: FakeEshop) -> tuple[int, Any]:
    return _changes(fake, request, eshop, INVOICES)


def _changes(fake: FakeShoptet, request: Request, eshop: FakeEshop, kind: Kind) -> tuple[int, Any]:
    """Only the last change per document; history older than 30 days is gone (spec: "guaranteed 30 days")."""
    since = params.moment(request.query, "from", required=True)
    change_type = request.query.get("changeType")
    if change_type not in (None, "", "edit", "delete"):
        raise ApiError(
            400, "invalid-parameter", f'Invalid value "{change_type}" of parameter "changeType".', "changeType"
        )
    horizon = fake.clock.now() - timedelta(days=fake.changes_retention_days)
    with fake.state.lock:
        changes = [
            change
            for change in kind.changes(eshop).values()
            if change.change_time >= since  # type: ignore[operator]
            and change.change_time >= horizon
            and change_type in (None, "", change.change_type)
        ]
        changes.sort(key=lambda change: (change.change_time, change.code))
        page, paginator = params.paginate(changes, request.query, kind.changes_default, kind.changes_max)
        return 200, {"changes": [change.to_api() for change in page], "paginator": paginator}


def order_snapshot(fake: FakeShoptet, request: Request, eshop: FakeEshop) -> tuple[int, Any]:
    return _snapshot(fake, request, eshop, ORDERS, order_view)


def invoice_snapshot(fake: FakeShoptet, request: Request, eshop: FakeEshop) -> tuple[int, Any]:
    return _snapshot(fake, request, eshop, INVOICES, invoice_view)


def _snapshot(
    fake: FakeShoptet,
    request: Request,
    eshop: FakeEshop,
    kind: Kind,
    view: Callable[[dict[str, Any], set[str]], dict[str, Any]],
) -> tuple[int, Any]:
    """Validate the filters now, build the lines when the job runs (the snapshot shows the state at that time)."""
    query = dict(request.query)
    includes = params.includes(query)
    with fake.state.lock:
        jobs.require_job_finished_webhook(eshop)
        select(kind, eshop, query)

        def build() -> list[dict[str, Any]]:
            documents = sorted(select(kind, eshop, query), key=lambda doc: (doc["creationTime"] or "", doc["code"]))
            return [view(doc, includes) for doc in documents]

        job = jobs.start(fake, eshop, request.path, kind.plural, build)
        return 202, {"jobId": job.job_id}


# -- changes made by the e-shop (tests and demo) ------------------------------------------------------------
def record_change(kind: Kind, eshop: FakeEshop, code: str, when: datetime, change_type: str) -> None:
    kind.changes(eshop)[code] = Change(code, when, change_type)


def add_order(
    eshop: FakeEshop,
    created: datetime,
    changed: datetime | None = None,
    *,
    code: str | None = None,
    nulls: schema.Nulls | None = None,
) -> dict[str, Any]:
    order = eshop.generator.order(created)
    if code is not None:
        if code in eshop.orders:
            raise ValueError(f"order {code!r} exists already")
        order["code"] = code
    if nulls is not None:
        order = schema.nulled("order", order, nulls)
    if changed is not None:
        order["changeTime"] = format_datetime(changed)
    eshop.orders[order["code"]] = order
    record_change(ORDERS, eshop, order["code"], changed or created, "edit")  # creation is an "edit" (spec)
    return order


def add_invoice(
    eshop: FakeEshop, order_code: str | None, created: datetime, *, nulls: schema.Nulls | None = None
) -> dict[str, Any]:
    generator = eshop.generator
    if order_code is None:
        invoice = generator.standalone_invoice(created)
    else:
        invoice = generator.invoice(eshop.orders[order_code], created)
    if nulls is not None:
        invoice = schema.nulled("invoice", invoice, nulls)
    eshop.invoices[invoice["code"]] = invoice
    record_change(INVOICES, eshop, invoice["code"], created, "edit")
    return invoice


def update_order(eshop: FakeEshop, code: str, changes: dict[str, Any], now: datetime) -> list[str]:
    """Apply top-level field changes; return the events Shoptet would emit (`order:update`, `:paid`, `:cancel`)."""
    order = _get(eshop.orders, code, "order")
    if isinstance(changes.get("status"), int):
        status = next((status for status in ORDER_STATUSES if status["id"] == changes["status"]), None)
        if status is None:
            raise ValueError(f"unknown order status id {changes['status']}")
        changes = {**changes, "status": {"id": status["id"], "name": status["name"]}}
    events = ["order:update"]
    if changes.get("paid") is True and order["paid"] is not True:
        events.append("order:paid")  # only for an unpaid -> paid change of an existing order (spec)
    new_status = (changes.get("status") or {}).get("id")
    if new_status == CANCELLED_STATUS_ID and (order["status"] or {}).get("id") != CANCELLED_STATUS_ID:
        events.append("order:cancel")
    order.update(changes, changeTime=format_datetime(now))
    record_change(ORDERS, eshop, code, now, "edit")
    return events


def update_invoice(eshop: FakeEshop, code: str, changes: dict[str, Any], now: datetime) -> None:
    invoice = _get(eshop.invoices, code, "invoice")
    invoice.update(changes, changeTime=format_datetime(now))
    record_change(INVOICES, eshop, code, now, "edit")


def delete(kind: Kind, eshop: FakeEshop, code: str, now: datetime) -> None:
    _get(kind.store(eshop), code, kind.name)
    del kind.store(eshop)[code]
    record_change(kind, eshop, code, now, "delete")


def _get(store: dict[str, dict[str, Any]], code: str, name: str) -> dict[str, Any]:
    if code not in store:
        raise KeyError(f"{name} {code!r} does not exist")
    return store[code]
