"""Deterministic, realistic e-shop data (Czech customers, orders, invoices) shaped by Shoptet's schemas."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from . import schema
from .clock import TIMEZONE_NAME, format_date, format_datetime

CENT = Decimal("0.01")

FIRST_NAMES = [
    ("Jan", "Novák"),
    ("Petr", "Svoboda"),
    ("Tomáš", "Dvořák"),
    ("Martin", "Černý"),
    ("Lukáš", "Procházka"),
    ("Jiří", "Kučera"),
    ("Pavel", "Veselý"),
    ("Ondřej", "Horák"),
    ("Eva", "Nováková"),
    ("Jana", "Svobodová"),
    ("Lucie", "Dvořáková"),
    ("Tereza", "Černá"),
    ("Kateřina", "Procházková"),
    ("Marie", "Kučerová"),
    ("Veronika", "Veselá"),
    ("Zuzana", "Horáková"),
]
ASCII = str.maketrans("áčďéěíňóřšťúůýžÁČĎÉĚÍŇÓŘŠŤÚŮÝŽ", "acdeeinorstuuyzACDEEINORSTUUYZ")

CITIES = [
    ("Praha 2", "120 00", "Vinohradská", "Praha"),
    ("Praha 7", "170 00", "Dukelských hrdinů", "Praha"),
    ("Brno", "602 00", "Masarykova", "Jihomoravský kraj"),
    ("Ostrava", "702 00", "Nádražní", "Moravskoslezský kraj"),
    ("Plzeň", "301 00", "Americká", "Plzeňský kraj"),
    ("Olomouc", "779 00", "Třída Svobody", "Olomoucký kraj"),
    ("Liberec", "460 01", "Pražská", "Liberecký kraj"),
    ("České Budějovice", "370 01", "Lannova třída", "Jihočeský kraj"),
    ("Hradec Králové", "500 02", "Gočárova třída", "Královéhradecký kraj"),
    ("Pardubice", "530 02", "Palackého", "Pardubický kraj"),
]
COMPANIES = ["Dřevovýroba s.r.o.", "Kavárna U Zlatého klíče s.r.o.", "Novák & syn a.s.", "Zahradnictví Kvítek s.r.o."]

# (name, code, brand, price with VAT in CZK, VAT rate, weight kg)
PRODUCTS = [
    ("Keramický hrnek Modřenka", "HRN-001", "Modřenka", "249.00", "21.00", "0.350"),
    ("Bavlněné tričko", "15/ZLU", "Tričkárna", "399.00", "21.00", "0.200"),
    ("Zrnková káva Brazílie 1 kg", "KAV-BRA-1000", "Pražírna Letná", "489.00", "12.00", "1.000"),
    ("Med květový 950 g", "MED-950", "Včelařství Hrubý", "219.00", "12.00", "0.950"),
    ("Dětská kniha Krtek a kalhotky", "978-80-00-05412-3", "Albatros", "199.00", "12.00", "0.400"),
    ("Kuchyňský nůž Tescoma", "TES-880520", "Tescoma", "329.00", "21.00", "0.150"),
    ("Lněný ubrus 140x180", "UBR/140/180", "Len Textil", "890.00", "21.00", "0.600"),
    ("Sada pastelek 24 ks", "KOH-3724", "Koh-i-noor", "159.00", "21.00", "0.300"),
    ("Čaj Earl Grey sypaný", "CAJ-EG-100", "Čajovna Dobrá", "145.00", "12.00", "0.100"),
    ("Sklenice na víno 6 ks", "SKL-W6", "Bohemia Crystal", "749.00", "21.00", "1.800"),
    ("Turistický batoh 30 l", "BAT-30-MOD", "Husky", "1490.00", "21.00", "0.900"),
    ("Svíčka sójová Levandule", "SVI-LEV", "Voňavá dílna", "279.00", "21.00", "0.250"),
]
VARIANTS = [None, None, "Barva: modrá", "Velikost: M", "Velikost: L", "Barva: zelená"]

# (name, price with VAT, shipping company code)
SHIPPINGS = [
    ("PPL", "99.00", "ppl"),
    ("Zásilkovna - výdejní místo", "79.00", "zasilkovna"),
    ("Česká pošta - Balík Do ruky", "129.00", "ceskaPosta"),
    ("DPD", "109.00", "dpd"),
    ("Osobní odběr na prodejně", "0.00", None),
]
# (name, price with VAT, billing method id, billing method name) - billing methods per the spec's code list
PAYMENTS = [
    ("Dobírka", "39.00", 1, "COD"),
    ("Převodem", "0.00", 2, "Wire transfer"),
    ("Hotově", "0.00", 3, "Cash"),
    ("Kartou online", "0.00", 4, "Card"),
]
ORDER_STATUSES = [
    {"id": -1, "order": 1, "name": "Nevyřízená", "markAsPaid": False},
    {"id": -2, "order": 2, "name": "Vyřizuje se", "markAsPaid": False},
    {"id": -3, "order": 3, "name": "Vyřízena", "markAsPaid": True},
    {"id": -4, "order": 4, "name": "Stornována", "markAsPaid": False},
    {"id": 5, "order": 5, "name": "Čeká na platbu", "markAsPaid": False},
]
CANCELLED_STATUS_ID = -4


def money(value: Decimal) -> str:
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def amount(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.001")))


def price_block(with_vat: Decimal, vat_rate: str) -> dict[str, str]:
    """`{withVat, withoutVat, vat, vatRate}` where withVat == withoutVat + vat exactly, to the cent."""
    with_vat = with_vat.quantize(CENT)
    without_vat = (with_vat / (1 + Decimal(vat_rate) / 100)).quantize(CENT, rounding=ROUND_HALF_UP)
    return {
        "withVat": money(with_vat),
        "withoutVat": money(without_vat),
        "vat": money(with_vat - without_vat),
        "vatRate": vat_rate,
    }


def multiply(unit: dict[str, str], quantity: Decimal) -> dict[str, str]:
    with_vat = Decimal(unit["withVat"]) * quantity
    without_vat = Decimal(unit["withoutVat"]) * quantity
    return {
        "withVat": money(with_vat),
        "withoutVat": money(without_vat),
        "vat": money(with_vat - without_vat),
        "vatRate": unit["vatRate"],
    }


def guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass
class EshopIdentity:
    eshop_id: int
    name: str
    url: str  # e.g. "http://127.0.0.1:8001/eshops/1000001/" (with trailing slash, like Shoptet's eshopUrl)
    email: str


@dataclass
class Generator:
    """Builds the data of one e-shop; the same seed and start time always give the same data."""

    eshop: EshopIdentity
    seed: int
    start: datetime
    rng: random.Random = field(init=False)
    order_sequence: int = 0
    invoice_sequence: int = 0
    item_sequence: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    # -- orders ----------------------------------------------------------------------------------------
    def order_code(self) -> str:
        """Order codes are strings: mostly `2026000123`, about 1 in 5 `2026/000123`, a few with letters/dashes."""
        self.order_sequence += 1
        year, number = self.start.year, self.order_sequence
        roll = self.rng.random()
        if roll < 0.2:
            return f"{year}/{number:06d}"
        if roll < 0.3:
            return f"{self.rng.choice(['E', 'POK', 'MO'])}-{year}{number:05d}"
        return f"{year}{number:06d}"

    def order(self, created: datetime | None = None) -> dict[str, Any]:
        rng = self.rng
        created = created or self.start
        code = self.order_code()
        first, last = rng.choice(FIRST_NAMES)
        email = f"{first}.{last}{rng.randint(1, 99)}@example.cz".lower().translate(ASCII)
        company = rng.choice(COMPANIES) if rng.random() < 0.15 else None
        billing = self._address(f"{first} {last}", company)
        delivery = billing if rng.random() < 0.8 else self._address(rng.choice(FIRST_NAMES)[0] + f" {last}", None)
        shipping_name, shipping_price, shipping_company = rng.choice(SHIPPINGS)
        payment_name, payment_price, billing_method_id, billing_method_name = rng.choice(PAYMENTS)
        currency, rate = ("EUR", Decimal("25")) if rng.random() < 0.1 else ("CZK", Decimal("1"))
        items = [self._product_item(rate) for _ in range(rng.randint(1, 4))]
        shipping_item = self._service_item("shipping", shipping_name, Decimal(shipping_price) / rate)
        billing_item = self._service_item("billing", payment_name, Decimal(payment_price) / rate)
        items += [shipping_item, billing_item]
        status = rng.choice(ORDER_STATUSES)
        paid: bool | None = rng.choice([True, True, False, None])
        shipping_guid, payment_guid = self._method_guid(shipping_name), self._method_guid(payment_name)
        price = self._total(items, currency, rate)
        order: dict[str, Any] = {
            "code": code,
            "guid": guid(rng),
            "externalCode": None,
            "creationTime": format_datetime(created),
            "changeTime": format_datetime(created),
            "email": email,
            "phone": f"+420{rng.randint(601000000, 799999999)}",
            "birthDate": None,
            "clientIPAddress": ".".join(str(rng.randint(1, 223)) for _ in range(4)),
            "customerGuid": guid(rng) if rng.random() < 0.6 else None,
            "cashDeskOrder": code.startswith("POK-"),
            "stockId": 1,
            "addressesEqual": delivery is billing,
            "vatPayer": True,
            "vatMode": "Normal",
            "billingMethod": {"id": billing_method_id, "name": billing_method_name},
            "paymentMethod": {"guid": payment_guid, "name": payment_name},
            "shipping": {"guid": shipping_guid, "name": shipping_name},
            "shippingDetails": self._shipping_details(shipping_company),
            "adminUrl": f"{self.eshop.url}admin/objednavky-detail/?id={self.order_sequence}",
            "status": {"id": status["id"], "name": status["name"]},
            "source": {"id": -1, "name": "E-shop"},
            "salesChannelGuid": None,
            "price": price,
            "paid": paid,
            "billingAddress": billing,
            "deliveryAddress": delivery,
            "onlinePaymentLink": None,
            "language": "cs",
            "referer": rng.choice([None, "https://www.google.com/", "https://www.heureka.cz/"]),
            "paymentMethods": [
                {"paymentMethod": {"guid": payment_guid, "name": payment_name}, "itemId": billing_item["itemId"]}
            ],
            "shippings": [
                {"shipping": {"guid": shipping_guid, "name": shipping_name}, "itemId": shipping_item["itemId"]}
            ],
            "items": items,
            "notes": self._notes(),
        }
        if billing_method_id == 4:
            order["paymentTransactions"] = [self._transaction(price["toPay"], created)]
        return schema.shape("order", order)

    def _address(self, full_name: str, company: str | None) -> dict[str, Any]:
        city, zip_code, street, region = self.rng.choice(CITIES)
        return {
            "company": company,
            "fullName": full_name,
            "street": street,
            "houseNumber": f"{self.rng.randint(1, 2500)}/{self.rng.randint(1, 60)}",
            "city": city,
            "district": None,
            "additional": None,
            "zip": zip_code,
            "countryCode": "CZ",
            "regionName": region,
            "regionShortcut": None,
            "companyId": f"{self.rng.randint(10000000, 99999999)}" if company else None,
            "vatId": f"CZ{self.rng.randint(10000000, 99999999)}" if company else None,
            "taxId": None,
        }

    def _method_guid(self, name: str) -> str:
        """Shipping and payment methods keep one GUID per e-shop."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.eshop.eshop_id}/{name}"))

    def _next_item_id(self) -> int:
        self.item_sequence += 1
        return self.eshop.eshop_id % 1000 * 100000 + self.item_sequence

    def _product_item(self, rate: Decimal) -> dict[str, Any]:
        rng = self.rng
        name, code, brand, price, vat_rate, weight = rng.choice(PRODUCTS)
        quantity = Decimal(rng.choice([1, 1, 1, 2, 3]))
        unit = price_block(Decimal(price) / rate, vat_rate)
        return {
            "itemId": self._next_item_id(),
            "productGuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.eshop.eshop_id}/product/{code}")),
            "code": code,
            "ean": f"859{rng.randint(1000000000, 9999999999)}",
            "itemType": "product",
            "productType": "product",
            "name": name,
            "variantName": rng.choice(VARIANTS),
            "brand": brand,
            "remark": None,
            "weight": weight,
            "additionalField": None,
            "amount": amount(quantity),
            "amountUnit": "ks",
            "amountCompleted": "0.000",
            "priceRatio": "1.0000",
            "status": {"id": -1, "name": "Nevyřízená"},
            "itemPrice": multiply(unit, quantity),
            "unitPrice": unit,
            "purchasePrice": None,
            "recyclingFee": None,
            "warrantyDescription": "24 měsíců",
            "stockLocation": f"A{rng.randint(1, 9)}/R{rng.randint(1, 20)}",
        }

    def _service_item(self, item_type: str, name: str, price: Decimal) -> dict[str, Any]:
        unit = price_block(price, "21.00")
        return {
            "itemId": self._next_item_id(),
            "productGuid": None,
            "code": None,
            "ean": None,
            "itemType": item_type,
            "name": name,
            "variantName": None,
            "brand": None,
            "remark": None,
            "weight": "0.000",
            "additionalField": None,
            "amount": "1.000",
            "amountUnit": None,
            "amountCompleted": "0.000",
            "priceRatio": "1.0000",
            "status": {"id": -1, "name": "Nevyřízená"},
            "itemPrice": dict(unit),
            "unitPrice": unit,
            "purchasePrice": None,
            "recyclingFee": None,
            "warrantyDescription": None,
        }

    def _total(self, items: list[dict[str, Any]], currency: str, rate: Decimal) -> dict[str, Any]:
        with_vat = sum((Decimal(item["itemPrice"]["withVat"]) for item in items), Decimal(0))
        without_vat = sum((Decimal(item["itemPrice"]["withoutVat"]) for item in items), Decimal(0))
        return {
            "vat": money(with_vat - without_vat),
            "toPay": money(with_vat),
            "currencyCode": currency,
            "withoutVat": money(without_vat),
            "withVat": money(with_vat),
            "exchangeRate": f"{rate:.8f}",
        }

    def _shipping_details(self, shipping_company: str | None) -> dict[str, Any] | None:
        if shipping_company != "zasilkovna":
            return None
        city, zip_code, street, _ = self.rng.choice(CITIES)
        branch = self.rng.randint(1000, 29999)
        return {
            "branchId": str(branch),
            "shippingCompanyCode": shipping_company,
            "name": f"{city}, {street} {self.rng.randint(1, 99)}",
            "note": None,
            "place": None,
            "street": street,
            "city": city,
            "zipCode": zip_code.replace(" ", ""),
            "countryCode": "CZ",
            "link": f"https://www.zasilkovna.cz/pobocky/{branch}",
            "latitude": None,
            "longitude": None,
            "carrierId": None,
        }

    def _notes(self) -> dict[str, Any]:
        remark = self.rng.choice([None, None, "Prosím doručit odpoledne.", "Zabalit jako dárek, děkuji!"])
        return {
            "customerRemark": remark,
            "eshopRemark": None,
            "trackingNumber": None,
            "trackingUrl": None,
            "additionalFields": [],
        }

    def _transaction(self, to_pay: str, created: datetime) -> dict[str, Any]:
        return {
            "transactionId": f"{self.rng.getrandbits(128):032x}",
            "price": to_pay,
            "status": "OK",
            "creationTime": format_datetime(created),
            "changeTime": format_datetime(created),
        }

    # -- invoices --------------------------------------------------------------------------------------
    def invoice_code(self) -> str:
        self.invoice_sequence += 1
        if self.rng.random() < 0.2:
            return f"FV/{self.start.year}/{self.invoice_sequence:04d}"
        return f"{self.start.year}{self.invoice_sequence:06d}"

    def invoice(self, order: dict[str, Any], created: datetime | None = None, *, linked: bool = True) -> dict[str, Any]:
        """An invoice issued from `order`: same customer, items and prices."""
        created = created or self.start
        code = self.invoice_code()
        billing_method = order["billingMethod"] or {"id": 2, "name": "Wire transfer"}
        invoice = {
            "code": code,
            "isValid": self.rng.random() < 0.95,
            "proformaInvoiceCodes": [],
            "orderCode": order["code"] if linked else None,
            "creationTime": format_datetime(created),
            "changeTime": format_datetime(created),
            "dueDate": format_date(created + timedelta(days=14)),
            "taxDate": format_date(created),
            "varSymbol": int("".join(ch for ch in code if ch.isdigit())[-10:]),
            "constSymbol": "0308",
            "specSymbol": None,
            "weight": None,
            "completePackageWeight": None,
            "billingMethod": billing_method,
            "billingAddress": order["billingAddress"],
            "deliveryAddress": order["deliveryAddress"],
            "addressesEqual": order["addressesEqual"],
            "price": dict(order["price"]),
            "customer": {
                "guid": order["customerGuid"],
                "email": order["email"],
                "phone": order["phone"],
                "remark": None,
            },
            "eshop": {
                "bankAccount": "2800123456/2010",
                "iban": "CZ6520100000002800123456",
                "bic": "FIOBCZPP",
                "vatPayer": True,
            },
            "items": [dict(item, consumptionTax=None) for item in order["items"]],
            "documentRemark": None,
            "vatPayer": True,
            "vatMode": "Normal",
            "paid": order["paid"],
        }
        return schema.shape("invoice", invoice)

    def standalone_invoice(self, created: datetime | None = None) -> dict[str, Any]:
        """An invoice with no order behind it (`orderCode` null), e.g. one typed in by hand in the admin."""
        created = created or self.start
        sequence = self.order_sequence
        order = self.order(created)
        self.order_sequence = sequence  # the throw-away order must not use up an order number
        return self.invoice(order, created, linked=False)


def eshop_info(identity: EshopIdentity) -> dict[str, Any]:
    """`data` of `GET /api/eshop` without the sections on demand."""
    info = {
        "contactInformation": {
            "eshopId": identity.eshop_id,
            "eshopName": identity.name,
            "eshopCategory": None,
            "url": identity.url,
            "eshopTitle": identity.name,
            "eshopSubtitle": None,
            "contactPerson": "Jana Nováková",
            "email": identity.email,
            "phone": "+420777123456",
            "mobilePhone": None,
            "skypeAccount": None,
            "contactPhotoUrl": None,
        },
        "billingInformation": {
            "billingName": f"{identity.name} s.r.o.",
            "company": {"companyId": "12345678", "vatId": "CZ12345678", "taxId": "CZ12345678"},
            "address": {"streetAddress": "Vinohradská 12", "city": "Praha 2", "zip": "120 00"},
            "country": {"countryCode": "CZ", "countryName": "Czech Republic"},
            "registration": "C 12345 vedená u Městského soudu v Praze",
            "phone": "+420777123456",
            "email": identity.email,
            "billingEmail": f"fakturace+{identity.eshop_id}@example.cz",
        },
        "settings": {
            "vatPayer": True,
            "cashDeskOnly": False,
            "trackStockClaims": False,
            "eshopLanguage": "cs",
            "timezone": TIMEZONE_NAME,
            "dateFormat": "j.n.Y",
            "timeFormat": "H:i",
            "internals": "cs",
        },
        "currencies": [_currency("CZK", "Koruna česká", "1.00000000", True), _currency("EUR", "Euro", "25.00000000")],
        "taxClasses": [
            {"title": "Základní sazba", "rates": [{"zone": "Default Zone", "vatRate": "21.00"}], "isDefault": True},
            {"title": "Snížená sazba", "rates": [{"zone": "Default Zone", "vatRate": "12.00"}], "isDefault": False},
        ],
        "activeModules": [{"title": "Cizí jazyky", "name": "foreignLanguages"}],
        "urls": [
            {"ident": "admin-orders-list", "url": f"{identity.url}admin/prehled-objednavek/"},
            {"ident": "admin-customers-list", "url": f"{identity.url}admin/prehled-zakazniku/"},
            {"ident": "oauth", "url": f"{identity.url}action/OAuthServer/"},
        ],
    }
    return schema.shape("eshop", info)


def order_statuses() -> dict[str, Any]:
    return {"defaultStatus": -1, "statuses": [dict(status) for status in ORDER_STATUSES]}


def _currency(code: str, title: str, rate: str, is_default: bool = False) -> dict[str, Any]:
    return {
        "code": code,
        "title": title,
        "isDefault": is_default,
        "isDefaultAdmin": is_default,
        "isDefaultDocuments": is_default,
        "isVisible": True,
        "exchangeRate": rate,
        "priority": 1 if is_default else 2,
        "display": {"text": "Kč" if code == "CZK" else "€", "location": "right", "decimalsSeparator": ","},
        "priceDecimalPlaces": 2,
        "documentPriceDecimalPlaces": 2,
        "rounding": "math",
        "minimalOrderValue": None,
        "bankAccount": {"accountNumber": "2800123456/2010", "iban": None, "bic": None, "ownerName": None},
    }
