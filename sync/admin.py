"""Partner staff's view of the mirror (read-only: Shoptet is the truth) and of sync jobs (retry, start)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import ADDITION
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from config.admin import (
    EshopFilter,
    EstimatedCountPaginator,
    FixedChoicesFilter,
    ReadOnlyMixin,
    TypedValueFilter,
    audit,
    badge,
    shorten,
)
from installations.models import Installation
from sync import jobs as sync_jobs
from sync import tasks
from sync.forms import StartSyncForm
from sync.models import Document, Invoice, InvoiceItem, Order, OrderItem, SyncCursor, SyncJob

ITEM_FIELDS = [
    "position",
    "item_type",
    "code",
    "name",
    "amount",
    "unit_price_with_vat",
    "total_price_with_vat",
    "vat_rate",
    "item_id",
]
STATUS_COLOURS = {
    SyncJob.Status.REQUESTED: "#2a5db0",
    SyncJob.Status.RUNNING: "#2a5db0",
    SyncJob.Status.IMPORTING: "#6a3fb0",
    SyncJob.Status.COMPLETED: "#1f7a3a",
    SyncJob.Status.FAILED: "#a11c1c",
}


class ReadOnlyItems(ReadOnlyMixin, admin.TabularInline):
    deletable = True  # can_delete keeps items in place
    extra = 0
    can_delete = False
    fields = readonly_fields = tuple(ITEM_FIELDS)


class OrderItemInline(ReadOnlyItems):
    model = OrderItem


class InvoiceItemInline(ReadOnlyItems):
    model = InvoiceItem


class DeletedFilter(admin.SimpleListFilter):
    title = "deleted at Shoptet"
    parameter_name = "deleted"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("no", "No"), ("yes", "Yes")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in ("no", "yes"):
            return queryset.filter(deleted_at__isnull=self.value() == "no")
        return queryset


class CurrencyFilter(TypedValueFilter):
    title = parameter_name = field = "currency"
    placeholder = "e.g. CZK"
    max_length = 8

    def value(self) -> str | None:
        value = super().value()
        return value.upper() if value else value  # ISO codes: czk finds CZK


class StatusNameFilter(TypedValueFilter):
    title = "status"
    parameter_name = field = "status_name"
    placeholder = "status name"


class VatModeFilter(TypedValueFilter):
    title = "VAT mode"
    parameter_name = field = "vat_mode"
    placeholder = "e.g. Normal"
    max_length = 64


class BillingMethodFilter(FixedChoicesFilter):
    """Shoptet's four billing methods, by id."""

    title = "billing method"
    parameter_name = field = "billing_method_id"

    def options(self) -> list[tuple[str, str]]:
        return [("1", "Cash on delivery"), ("2", "Wire transfer"), ("3", "Cash"), ("4", "Card")]


class DocumentAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Read-only: a local edit would be overwritten by the next sync anyway."""

    list_select_related = ["installation"]
    search_fields = ["^code", "^email"]
    search_help_text = "Code or e-mail, from its beginning."
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    ordering = ["-creation_time"]

    @admin.display(description="e-shop", ordering="installation__eshop_id")
    def eshop(self, document: Document) -> int:
        return document.installation.eshop_id

    @admin.display(description="deleted", boolean=True)
    def is_deleted(self, document: Document) -> bool:
        return document.deleted_at is not None

    @admin.display(description="Shoptet object")
    def raw_json(self, document: Document) -> str:
        return format_html(
            '<pre style="white-space:pre-wrap;margin:0">{}</pre>',
            json.dumps(document.data, indent=2, ensure_ascii=False),
        )


@admin.register(Order)
class OrderAdmin(DocumentAdmin):
    list_display = [
        "code",
        "eshop",
        "status_name",
        "total_with_vat",
        "currency",
        "paid",
        "email",
        "creation_time",
        "change_time",
        "is_deleted",
    ]
    # No filter lists the values in use: that is a DISTINCT over every e-shop's orders on each page.
    list_filter = [
        EshopFilter,
        "paid",
        StatusNameFilter,
        CurrencyFilter,
        DeletedFilter,
    ]
    fields = readonly_fields = (
        "installation",
        "code",
        "guid",
        "status_id",
        "status_name",
        "email",
        "currency",
        "total_with_vat",
        "total_without_vat",
        "to_pay",
        "paid",
        "creation_time",
        "change_time",
        "item_count",
        "deleted_at",
        "synced_at",
        "raw_json",
    )
    inlines = [OrderItemInline]


@admin.register(Invoice)
class InvoiceAdmin(DocumentAdmin):
    list_display = [
        "code",
        "eshop",
        "order_code",
        "is_valid",
        "var_symbol",
        "total_with_vat",
        "currency",
        "paid",
        "creation_time",
        "change_time",
        "is_deleted",
    ]
    list_filter = [
        EshopFilter,
        "is_valid",
        "paid",
        BillingMethodFilter,
        VatModeFilter,
        CurrencyFilter,
        DeletedFilter,
    ]
    search_fields = ["^code", "^order_code", "=var_symbol"]
    search_help_text = "Invoice code or order code (from its beginning), or the exact variable symbol."
    fields = readonly_fields = (
        "installation",
        "code",
        "order_code",
        "is_valid",
        "var_symbol",
        "billing_method_id",
        "billing_method_name",
        "vat_mode",
        "currency",
        "total_with_vat",
        "total_without_vat",
        "to_pay",
        "paid",
        "due_date",
        "tax_date",
        "creation_time",
        "change_time",
        "item_count",
        "deleted_at",
        "synced_at",
        "raw_json",
    )
    inlines = [InvoiceItemInline]


class StartEshopSyncForm(StartSyncForm):
    """The sync list's "Start a sync": the same choice, for the e-shop named by its id."""

    eshop_id = forms.IntegerField(label="E-shop id", min_value=1)
    field_order = ["eshop_id", "resource", "mode"]

    def clean_eshop_id(self) -> Installation:
        installation = Installation.objects.filter(eshop_id=self.cleaned_data["eshop_id"]).first()
        if installation is None:
            raise forms.ValidationError("No installation has this e-shop id.")
        return installation


@admin.register(SyncJob)
class SyncJobAdmin(ReadOnlyMixin, admin.ModelAdmin):
    deletable = True  # added only by "Start a sync", which validates and enqueues
    list_display = [
        "id",
        "installation",
        "resource",
        "mode",
        "status_badge",
        "shoptet_job_id",
        "created_at",
        "finished_at",
        "received",
        "imported",
        "skipped",
        "deleted",
        "short_error",
        "next_retry",
    ]
    list_filter = ["status", "resource", "mode", EshopFilter]
    search_fields = ["=installation__eshop_id", "=shoptet_job_id"]
    search_help_text = "Exact e-shop id or Shoptet job id."
    list_select_related = ["installation"]
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    actions = ["retry"]
    change_list_template = "admin/sync/syncjob/change_list.html"
    # The result URL is a secret (anybody holding it can download the e-shop's data): never shown.
    fields = readonly_fields = (
        "installation",
        "resource",
        "mode",
        "status",
        "cause",
        "change_time_from",
        "shoptet_job_id",
        "shoptet_created_at",
        "shoptet_completed_at",
        "valid_until",
        "polls",
        "next_poll_at",
        "restarts",
        "attempts",
        "received",
        "imported",
        "skipped",
        "deleted",
        "error",
        "next_retry",
        "note",
        "created_at",
        "started_at",
        "finished_at",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[SyncJob]:
        # The failed `/changes` run that its cursor retries, with when: one subquery, not a query per row.
        retried = SyncCursor.objects.filter(failed_job=OuterRef("pk")).values("retry_at")[:1]
        jobs: QuerySet[SyncJob] = super().get_queryset(request)
        return jobs.annotate(scheduled_retry_at=Subquery(retried))

    @admin.display(description="next retry")
    def next_retry(self, job: SyncJob) -> str:
        retry_at = getattr(job, "scheduled_retry_at", None)
        if retry_at is None:
            return "—"
        return f"retrying at {retry_at:%Y-%m-%d %H:%M} UTC"

    @admin.display(description="status", ordering="status")
    def status_badge(self, job: SyncJob) -> str:
        return badge(STATUS_COLOURS.get(SyncJob.Status(job.status), "#333"), job.get_status_display())

    @admin.display(description="error")
    def short_error(self, job: SyncJob) -> str:
        return shorten(job.error)

    @admin.action(description="Retry the selected failed jobs")
    def retry(self, request: HttpRequest, queryset: QuerySet[SyncJob]) -> None:
        retried = []
        for job in queryset.filter(status=SyncJob.Status.FAILED).select_related("installation"):
            try:
                tasks.enqueue(sync_jobs.retry_job(job=job))
            except sync_jobs.SyncError as error:
                self.message_user(request, f"Job {job.pk}: {error}", messages.WARNING)
                continue
            retried.append(job)
        audit(request, retried, "Retried the failed job.")
        self.message_user(request, f"{len(retried)} jobs queued again.", messages.SUCCESS)

    def get_urls(self) -> list[Any]:
        return [path("start/", self.admin_site.admin_view(self.start_view), name="sync-start"), *super().get_urls()]

    def start_view(self, request: HttpRequest) -> HttpResponse:
        form = StartEshopSyncForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                job = sync_jobs.request_sync(
                    installation=form.cleaned_data["eshop_id"],
                    resource=form.cleaned_data["resource"],
                    mode=form.cleaned_data["mode"],
                    cause=f"admin ({request.user})",
                )
            except sync_jobs.SyncError as error:
                form.add_error(None, str(error))
            else:
                tasks.enqueue(job)
                audit(request, [job], "Started the sync.", action_flag=ADDITION)
                self.message_user(request, f"{job} queued.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:sync_syncjob_changelist"))
        context = {**self.admin_site.each_context(request), "title": "Start a sync", "form": form, "opts": self.opts}
        return TemplateResponse(request, "admin/sync/syncjob/start.html", context)
