"""The delivery log for partner staff: filter, search by instance, read the body and the error, replay."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from config.admin import EshopFilter, EstimatedCountPaginator, ReadOnlyMixin, audit, badge, shorten
from webhooks import outbox
from webhooks.events import SYSTEM_EVENTS
from webhooks.models import WebhookDelivery

STATUS_COLOURS = {
    WebhookDelivery.Status.RECEIVED: "#2a5db0",
    WebhookDelivery.Status.PROCESSED: "#1f7a3a",
    WebhookDelivery.Status.FAILED: "#a11c1c",
    WebhookDelivery.Status.REJECTED: "#a15c00",
    WebhookDelivery.Status.IGNORED: "#6b6b6b",
}


class EventFilter(admin.SimpleListFilter):
    title = "event"
    parameter_name = "event"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        events = sorted({*settings.SHOPTET_WEBHOOK_EVENTS, *SYSTEM_EVENTS})
        return [(event, event) for event in events]

    def queryset(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> QuerySet[WebhookDelivery]:
        return queryset.filter(event=self.value()) if self.value() else queryset


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyMixin, admin.ModelAdmin[WebhookDelivery]):
    editable = True  # never added (deliveries come only from Shoptet) or deleted (the log is the record)
    list_display = [
        "id",
        "received_at",
        "eshop_id",
        "event",
        "short_instance",
        "status_badge",
        "signature_valid",
        "attempts",
        "short_error",
    ]
    # Choices come from the installations and the configured events, never from a scan of the log.
    list_filter = [
        EshopFilter,
        EventFilter,
        "status",
        "signature_valid",
        "source",
        ("received_at", admin.DateFieldListFilter),
    ]
    search_fields = ["event_instance"]
    search_help_text = "Exact eventInstance (an order or invoice code, a job id, …)."
    list_select_related = ["installation"]
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    # No date_hierarchy: its links are a DISTINCT over the dates of the whole log on every page. The
    # received_at filter's fixed ranges do the same job.
    actions = ["replay"]
    change_form_template = "admin/webhooks/webhookdelivery/change_form.html"
    fields = readonly_fields = (
        "installation",
        "eshop_id",
        "event",
        "event_instance",
        "event_created",
        "received_at",
        "source",
        "source_ip",
        "signature_valid",
        "status",
        "attempts",
        "error",
        "next_attempt_at",
        "processed_at",
        "duplicate_of",
        "replayed_at",
        "payload_purged_at",
        "body_summary",
        "pretty_headers",
        "pretty_payload",
    )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[WebhookDelivery], search_term: str
    ) -> tuple[QuerySet[WebhookDelivery], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        # Exact and through the indexed prefix: the log is large and a LIKE scan would read all of it.
        return queryset.with_instance(term), False  # type: ignore[attr-defined]

    @admin.display(description="instance")
    def short_instance(self, delivery: WebhookDelivery) -> str:
        return shorten(delivery.event_instance, 40)

    @admin.display(description="error")
    def short_error(self, delivery: WebhookDelivery) -> str:
        return shorten(delivery.error)

    @admin.display(description="status", ordering="status")
    def status_badge(self, delivery: WebhookDelivery) -> str:
        return badge(STATUS_COLOURS.get(WebhookDelivery.Status(delivery.status), "#333"), delivery.get_status_display())

    @admin.display(description="body")
    def pretty_payload(self, delivery: WebhookDelivery) -> str:
        if delivery.payload_purged_at:
            return "(purged)"
        if delivery.body_truncated:
            # A prefix is seldom valid JSON: shown as text, marked as cut.
            text = bytes(delivery.body or b"").decode("utf-8", "replace")
            return format_html('<pre style="white-space:pre-wrap;margin:0">{}…</pre><p>(cut)</p>', text)
        return format_html('<pre style="white-space:pre-wrap;margin:0">{}</pre>', delivery.pretty_body)

    @admin.display(description="body size")
    def body_summary(self, delivery: WebhookDelivery) -> str:
        if delivery.body_length is None:
            return "not read: larger than the cap" if delivery.body_truncated else "unknown"
        if delivery.body_truncated:
            return (
                f"cut: the first {len(bytes(delivery.body or b''))} of {delivery.body_length} bytes kept "
                f"(SHA-256 of the whole body {delivery.body_sha256})"
            )
        return f"{delivery.body_length} bytes (SHA-256 {delivery.body_sha256})"

    @admin.display(description="headers")
    def pretty_headers(self, delivery: WebhookDelivery) -> str:
        lines = "\n".join(f"{name}: {value}" for name, value in sorted(delivery.headers.items()))
        return format_html('<pre style="white-space:pre-wrap;margin:0">{}</pre>', lines)

    @admin.action(description="Replay the selected deliveries (processed or failed)", permissions=["change"])
    def replay(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        count = outbox.replay_deliveries(deliveries=queryset)
        replayed = queryset.filter(status=WebhookDelivery.Status.RECEIVED, replay_requested=True)
        audit(request, replayed, "Replayed the delivery.")
        skipped = queryset.count() - count
        text = f"{count} deliveries queued for processing again."
        if skipped:
            text += f" {skipped} skipped: only processed or failed deliveries can be replayed."
        self.message_user(request, text, messages.SUCCESS if count else messages.WARNING)

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<int:object_id>/replay/",
                self.admin_site.admin_view(self.replay_view),
                name="webhooks_webhookdelivery_replay",
            ),
            *super().get_urls(),
        ]

    def replay_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        delivery = get_object_or_404(WebhookDelivery, pk=object_id)
        if not self.has_change_permission(request, delivery):
            return HttpResponse(status=403)
        if outbox.replay_deliveries(deliveries=WebhookDelivery.objects.filter(pk=delivery.pk)):
            audit(request, [delivery], "Replayed the delivery.")
            self.message_user(request, "Delivery queued for processing again.", messages.SUCCESS)
        else:
            self.message_user(
                request, f"A {delivery.get_status_display().lower()} delivery cannot be replayed.", messages.ERROR
            )
        return HttpResponseRedirect(reverse("admin:webhooks_webhookdelivery_change", args=[delivery.pk]))

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        delivery = WebhookDelivery.objects.filter(pk=object_id).first() if object_id and object_id.isdigit() else None
        extra_context = {
            **(extra_context or {}),
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
            "can_replay": bool(
                delivery
                and delivery.installation_id
                and delivery.status in (WebhookDelivery.Status.PROCESSED, WebhookDelivery.Status.FAILED)
                and self.has_change_permission(request, delivery)
            ),
        }
        return super().changeform_view(request, object_id, form_url, extra_context)
