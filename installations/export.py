"""One e-shop's mirrored data as a gzip JSON-lines file, written as it is read (never whole in memory).

Each line is one object with a `type`: `order` and `invoice` (Shoptet's object as stored, its item rows,
when it was deleted at Shoptet) and `settings_change` (the settings page's audit log). Used by the
`export_eshop_data` command, the admin's export action and the settings page's signed download link.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Model, QuerySet

from installations.models import Installation, SettingsChange
from sync.models import Invoice, InvoiceItem, Order, OrderItem

# Documents read per query: enough to keep round trips few, small enough to keep memory flat.
CHUNK = 500
ITEM_COLUMNS = (
    "position",
    "item_id",
    "item_type",
    "code",
    "name",
    "amount",
    "unit_price_with_vat",
    "total_price_with_vat",
    "vat_rate",
)


def filename(installation: Installation) -> str:
    return f"eshop-{installation.eshop_id}-data.jsonl.gz"


def records(installation: Installation) -> Iterator[dict[str, Any]]:
    """Every exported object of one installation: orders, invoices, then settings changes."""
    yield from _documents("order", Order.objects.filter(installation=installation), OrderItem, "order")
    yield from _documents("invoice", Invoice.objects.filter(installation=installation), InvoiceItem, "invoice")
    changes = SettingsChange.objects.filter(installation=installation).order_by("created_at", "pk")
    for change in changes.iterator(chunk_size=CHUNK):
        yield {
            "type": "settings_change",
            "field": change.field,
            "old_value": change.old_value,
            "new_value": change.new_value,
            "admin_email": change.admin_email,
            "admin_name": change.admin_name,
            "created_at": change.created_at,
        }


def _documents(kind: str, documents: QuerySet[Any], item_model: type[Model], parent: str) -> Iterator[dict[str, Any]]:
    """Documents a chunk at a time, each chunk's items read in one query."""
    last_pk = 0
    while True:
        chunk = list(documents.filter(pk__gt=last_pk).order_by("pk")[:CHUNK])
        if not chunk:
            return
        last_pk = chunk[-1].pk
        items: dict[int, list[dict[str, Any]]] = {document.pk: [] for document in chunk}
        rows = item_model._default_manager.filter(**{f"{parent}__in": list(items)}).order_by(f"{parent}_id", "position")
        for row in rows.values(f"{parent}_id", *ITEM_COLUMNS):
            items[row.pop(f"{parent}_id")].append(row)
        for document in chunk:
            yield {
                "type": kind,
                "code": document.code,
                "creation_time": document.creation_time,
                "change_time": document.change_time,
                "deleted_at": document.deleted_at,
                "data": document.data,
                "items": items[document.pk],
            }


def gzip_lines(installation: Installation) -> Iterator[bytes]:
    """The export file's bytes, compressed a line at a time."""
    compressor = zlib.compressobj(wbits=31)  # 31: gzip header and trailer
    for record in records(installation):
        line = json.dumps(record, cls=DjangoJSONEncoder, ensure_ascii=False, sort_keys=True) + "\n"
        chunk = compressor.compress(line.encode("utf-8"))
        if chunk:
            yield chunk
    yield compressor.flush()


# ---------------------------------------------------------------------------
# The settings page's download link: signed for one installation, valid for EXPORT_LINK_MAX_AGE
# ---------------------------------------------------------------------------

LINK_SALT = "installations.export.link"


class LinkRefused(Exception):
    """The download link is not one we issued for this e-shop, or it expired; `http_status` says which."""

    def __init__(self, message: str, *, http_status: int) -> None:
        super().__init__(message)
        self.http_status = http_status


def sign_link(installation: Installation) -> str:
    """The link's value: the installation and e-shop, signed with a salt used for nothing else."""
    return signing.dumps({"installation": installation.pk, "eshop": installation.eshop_id}, salt=LINK_SALT)


def installation_of_link(value: str, *, eshop_id: str) -> Installation:
    """The installation a link was issued for, when it is intact, unexpired and for the e-shop it names."""
    try:
        claims = signing.loads(value, salt=LINK_SALT, max_age=settings.EXPORT_LINK_MAX_AGE)
    except signing.SignatureExpired as expired:
        raise LinkRefused("This download link has expired.", http_status=403) from expired
    except signing.BadSignature as bad:
        raise LinkRefused("This download link is not valid.", http_status=403) from bad
    installation_pk, eshop = (claims.get("installation"), claims.get("eshop")) if isinstance(claims, dict) else (0, 0)
    if not isinstance(installation_pk, int) or not isinstance(eshop, int) or str(eshop) != eshop_id:
        raise LinkRefused("This download link belongs to another e-shop.", http_status=404)
    installation = (
        Installation.objects.defer("oauth_token", "webhook_signature_key", "previous_webhook_signature_key")
        .filter(pk=installation_pk, eshop_id=eshop)
        .first()
    )
    if installation is None:
        raise LinkRefused("This e-shop has no data here.", http_status=404)
    return installation
