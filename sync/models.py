"""The local mirror of each e-shop's orders and invoices, and the sync jobs that keep it complete and current."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import models
from django.db.models import Q

from config.crypto import EncryptedTextField
from installations.models import Installation


def _price() -> models.DecimalField:
    return models.DecimalField(max_digits=20, decimal_places=2, null=True, blank=True)


def _mirrored_text(max_length: int) -> models.CharField:
    # Django's convention of `""` for "no text" would lose what Shoptet says: a mirror must tell its null
    # (an invoice without an order) from an empty string.
    return models.CharField(max_length=max_length, null=True, blank=True)


# Shoptet's orders and invoices are a handful of levels deep. A stored object nested far deeper (a result file
# can carry one up to the parser's 1024 levels) would crash every page and API answer that loads or renders it.
MAX_DOCUMENT_DEPTH = 100
TOO_DEEP = {"unreadable": f"The stored object is nested deeper than {MAX_DOCUMENT_DEPTH} levels; it is not shown."}


def nesting_depth(value: Any, *, give_up_after: int = MAX_DOCUMENT_DEPTH) -> int:
    """How deep lists and objects nest in `value`, walked without recursion; stops once past `give_up_after`."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > give_up_after:
            break
        pending.extend((child, depth + 1) for child in children)
    return deepest


class DocumentDataField(models.JSONField):
    """A JSON column that reads an object nested too deeply as TOO_DEEP; the row itself is left as stored."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        try:
            data = super().from_db_value(value, expression, connection)
        except RecursionError:
            return dict(TOO_DEEP)
        return dict(TOO_DEEP) if nesting_depth(data) > MAX_DOCUMENT_DEPTH else data

    def deconstruct(self) -> Any:
        # The column is a plain JSON one: migrations need not know about the guard.
        name, _, args, kwargs = super().deconstruct()
        return name, "django.db.models.JSONField", args, kwargs


def _newest_first(name: str) -> models.Index:
    """The REST API's list order: newest first."""
    return models.Index(fields=["installation", "-creation_time", "-id"], name=name)


def _newest_of_all(name: str) -> models.Index:
    """The admin's list order over every e-shop: newest first, a page read off the index instead of sorted."""
    return models.Index(fields=["-creation_time", "-id"], name=name)


class Document(models.Model):
    """What orders and invoices share: the tenant, Shoptet's code, totals, times and the full object.

    A column mirrors Shoptet's value: null where Shoptet sent null or nothing, never an invented `""` or 0.
    """

    # The unique (installation, code) index serves every lookup by installation; no separate FK index.
    installation = models.ForeignKey(Installation, on_delete=models.CASCADE, related_name="+", db_index=False)
    code = models.CharField(max_length=255)
    currency = _mirrored_text(8)
    total_with_vat = _price()
    total_without_vat = _price()
    to_pay = _price()
    paid = models.BooleanField(null=True, blank=True)
    creation_time = models.DateTimeField(null=True, blank=True)
    change_time = models.DateTimeField(null=True, blank=True)
    item_count = models.PositiveIntegerField(null=True, blank=True, help_text="Null when Shoptet sent no items list.")
    data = DocumentDataField(help_text="The full Shoptet object as last fetched.")
    deleted_at = models.DateTimeField(null=True, blank=True, help_text="When Shoptet confirmed the deletion.")
    synced_at = models.DateTimeField()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.code

    def accepts(self, change_time: datetime | None) -> bool:
        """True when a version changed at `change_time` may replace this row: never older over newer.

        A deleted row comes back only for a version changed after the deletion (a reused code); the
        bulk import in `sync.importer` applies the same rule in SQL.
        """
        if self.deleted_at is not None:
            return change_time is not None and change_time > self.deleted_at
        return self.change_time is None or (change_time is not None and change_time >= self.change_time)


class Order(Document):
    guid = _mirrored_text(64)
    status_id = models.IntegerField(null=True, blank=True)
    status_name = _mirrored_text(255)
    email = _mirrored_text(254)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["installation", "code"], name="sync_order_unique_code")]
        indexes = [_newest_first("sync_order_newest"), _newest_of_all("sync_order_newest_of_all")]


class Invoice(Document):
    order_code = _mirrored_text(255)
    is_valid = models.BooleanField(null=True, blank=True)
    var_symbol = models.BigIntegerField(null=True, blank=True)
    billing_method_id = models.IntegerField(null=True, blank=True, help_text="1 COD, 2 wire transfer, 3 cash, 4 card")
    billing_method_name = _mirrored_text(64)
    vat_mode = _mirrored_text(64)
    due_date = models.DateField(null=True, blank=True)
    tax_date = models.DateField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["installation", "code"], name="sync_invoice_unique_code")]
        indexes = [_newest_first("sync_invoice_newest"), _newest_of_all("sync_invoice_newest_of_all")]


class DocumentItem(models.Model):
    """One line of an order or invoice (products, shipping, payment, discounts), for addons to query."""

    installation = models.ForeignKey(Installation, on_delete=models.CASCADE, related_name="+", db_index=False)
    position = models.PositiveSmallIntegerField(help_text="Index in Shoptet's items list.")
    item_id = models.BigIntegerField(null=True, blank=True, help_text="Shoptet's itemId.")
    item_type = models.CharField(max_length=64, blank=True)
    code = models.CharField(max_length=255, blank=True)
    name = models.CharField(max_length=255, blank=True)
    amount = models.DecimalField(max_digits=20, decimal_places=3, null=True, blank=True)
    unit_price_with_vat = _price()
    total_price_with_vat = _price()
    vat_rate = models.DecimalField(max_digits=7, decimal_places=2, null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["position"]

    def __str__(self) -> str:
        return self.name or self.code or self.item_type


class OrderItem(DocumentItem):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="items")

    class Meta(DocumentItem.Meta):
        indexes = [models.Index(fields=["installation", "code"], name="sync_orderitem_code")]


class InvoiceItem(DocumentItem):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="items")

    class Meta(DocumentItem.Meta):
        indexes = [models.Index(fields=["installation", "code"], name="sync_invoiceitem_code")]


class SyncJob(models.Model):
    """One sync run for one installation and resource: a snapshot (Shoptet's async job) or a `/changes` read."""

    class Resource(models.TextChoices):
        ORDERS = "orders", "Orders"
        INVOICES = "invoices", "Invoices"

    class Mode(models.TextChoices):
        SNAPSHOT = "snapshot", "Snapshot"
        CHANGES = "changes", "Changes"

    class Status(models.TextChoices):
        REQUESTED = "requested", "Requested"
        RUNNING = "running", "Running"
        IMPORTING = "importing", "Importing"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"

    UNFINISHED = (Status.REQUESTED, Status.RUNNING, Status.IMPORTING)

    installation = models.ForeignKey(Installation, on_delete=models.CASCADE, related_name="sync_jobs")
    resource = models.CharField(max_length=16, choices=Resource.choices)
    mode = models.CharField(max_length=16, choices=Mode.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.REQUESTED)
    cause = models.CharField(max_length=255, blank=True, help_text="Who or what started it.")
    change_time_from = models.DateTimeField(
        null=True, blank=True, help_text="Incremental snapshot: only documents changed since then."
    )
    creation_time_to = models.DateTimeField(
        null=True, blank=True, help_text="Only documents created until then (a range the import-from date left out)."
    )

    shoptet_job_id = models.CharField(max_length=64, blank=True)
    shoptet_created_at = models.DateTimeField(null=True, blank=True)
    shoptet_completed_at = models.DateTimeField(null=True, blank=True)
    # Anybody holding the URL can download the e-shop's data until it expires, so it is a secret.
    result_url = EncryptedTextField(blank=True, default="")
    valid_until = models.DateTimeField(null=True, blank=True)
    polls = models.PositiveSmallIntegerField(default=0, help_text="Job detail requests answered 'unfinished'.")
    next_poll_at = models.DateTimeField(null=True, blank=True)
    restarts = models.PositiveSmallIntegerField(default=0, help_text="New Shoptet jobs after an expired result.")
    attempts = models.PositiveSmallIntegerField(default=1)

    received = models.PositiveIntegerField(default=0, help_text="Lines or changes read from Shoptet.")
    imported = models.PositiveIntegerField(default=0, help_text="Documents inserted or updated.")
    skipped = models.PositiveIntegerField(default=0, help_text="Documents already as new locally.")
    deleted = models.PositiveIntegerField(default=0, help_text="Documents marked deleted.")
    error = models.TextField(blank=True)
    note = models.CharField(max_length=255, blank=True)

    # The claim of the run that works on the job (an import, a `/changes` read), renewed by it every few
    # seconds: once it lapses the run is taken for dead and the relay hands the job to a new one. An empty
    # owner with a time means "handed on": the next run may take it at once.
    lease_owner = models.CharField(max_length=32, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # At most one unfinished run per installation, resource and mode.
            models.UniqueConstraint(
                fields=["installation", "resource", "mode"],
                condition=Q(status__in=["requested", "running", "importing"]),
                name="sync_job_one_in_flight",
            ),
        ]
        indexes = [
            models.Index(fields=["installation", "shoptet_job_id"], name="sync_job_shoptet_id"),
            models.Index(fields=["status", "next_poll_at"], name="sync_job_due"),
            # The pruning of old `/changes` runs (sync.jobs.prune_jobs), a bounded slice per tick.
            models.Index(fields=["finished_at"], condition=Q(mode="changes"), name="sync_job_changes_finished"),
        ]

    def __str__(self) -> str:
        return f"{self.get_mode_display()} of {self.resource} #{self.pk}"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.COMPLETED, self.Status.FAILED)


class SyncCursor(models.Model):
    """Where the next `/changes` read of one installation and resource starts, and how the last runs went.

    A failed run leaves `changes_from` where it was and schedules a retry (`retry_at`); the next run that
    completes clears the failure.
    """

    installation = models.ForeignKey(Installation, on_delete=models.CASCADE, related_name="sync_cursors")
    resource = models.CharField(max_length=16, choices=SyncJob.Resource.choices)
    changes_from = models.DateTimeField(null=True, blank=True)
    failures = models.PositiveSmallIntegerField(default=0, help_text="`/changes` runs failed in a row.")
    failed_at = models.DateTimeField(null=True, blank=True, help_text="When the last `/changes` run failed.")
    failed_job = models.ForeignKey(SyncJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    error = models.TextField(blank=True, help_text="Why the last `/changes` run failed.")
    retry_at = models.DateTimeField(null=True, blank=True, help_text="When the failed run is retried.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["installation", "resource"], name="sync_cursor_unique_resource"),
        ]
        indexes = [
            models.Index(fields=["retry_at"], condition=Q(retry_at__isnull=False), name="sync_cursor_retry_due"),
        ]

    def __str__(self) -> str:
        return f"{self.resource} from {self.changes_from}"

    @property
    def is_failing(self) -> bool:
        return self.failures > 0


class RefreshRequest(models.Model):
    """A document to fetch again because a webhook named it; one row per code however many events came.

    A worker claims a batch, fetches each document once and deletes the rows it claimed. An event that
    arrives meanwhile clears the claim, so the document is fetched again after the change it announces.
    """

    installation = models.ForeignKey(Installation, on_delete=models.CASCADE, related_name="+", db_index=False)
    resource = models.CharField(max_length=16, choices=SyncJob.Resource.choices)
    code = models.CharField(max_length=255)
    requested_at = models.DateTimeField()
    claim = models.CharField(max_length=32, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["installation", "resource", "code"], name="sync_refresh_unique_code"),
        ]
        indexes = [models.Index(fields=["claim"], name="sync_refresh_claim")]

    def __str__(self) -> str:
        return f"{self.resource} {self.code}"
