"""Partner staff's view of tenants: health at a glance, the e-shop's data one click away, and the actions that
run the business. Secrets never appear here: the encrypted fields are not even loaded (`get_queryset`), and
every action is recorded in the admin log (config.admin.audit).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from functools import cache
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import BooleanField, Count, ExpressionWrapper, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from addon import auth
from addon import services as addon_services
from config.admin import EshopFilter, FixedChoicesFilter, ReadOnlyMixin, audit, badge
from installations import demo, export, retention, services
from installations.models import AddonSettings, Installation, InstallAttempt, SettingsChange, StatusChange
from shoptet_api import tokens
from shoptet_api.errors import ShoptetError
from sync import jobs as sync_jobs
from sync import tasks as sync_tasks
from sync.forms import StartSyncForm
from sync.models import Invoice, Order, SyncCursor, SyncJob
from webhooks.models import RegistrationDrift, WebhookDelivery, WebhookRegistration

SECRET_FIELDS = ("oauth_token", "webhook_signature_key", "previous_webhook_signature_key")
# Compared in SQL, never decrypted: an encrypted field stores "" as "".
EMPTY = Value("")

STATUS_COLOURS = {
    Installation.Status.ACTIVE: "#1f7a3a",
    Installation.Status.SUSPENDED: "#a15c00",
    Installation.Status.UNINSTALLED: "#6b6b6b",
    Installation.Status.TERMINATED: "#a11c1c",
}
ONBOARDING_COLOURS = {
    Installation.Onboarding.PENDING: "#2a5db0",
    Installation.Onboarding.DONE: "#1f7a3a",
    Installation.Onboarding.FAILED: "#a11c1c",
}


def changes_failure(cursor: SyncCursor, installation: Installation) -> str:
    """A failing cursor in words: "last orders changes sync failed at …, retrying at …"."""
    assert cursor.failed_at is not None  # noqa: S101 - only failing cursors get here
    text = f"last {cursor.resource} changes sync failed at {cursor.failed_at:%Y-%m-%d %H:%M} UTC"
    if cursor.failures > 1:
        text += f" ({cursor.failures} runs in a row)"
    if cursor.retry_at is not None:
        text += f", retrying at {cursor.retry_at:%Y-%m-%d %H:%M} UTC"
    elif installation.is_active:
        text += ", a retry is running"
    else:
        text += f", no retry while the installation is {installation.get_status_display()}"
    return f"{text}: {cursor.error}" if cursor.error else text


class ReadOnlyInline(ReadOnlyMixin, admin.TabularInline):
    """History shown on the installation page: written by the platform, never edited by hand."""

    editable = deletable = True  # inlines: can_delete and read-only fields keep them unchanged

    extra = 0
    can_delete = False
    # Without the row's name repeated on a line above each row.
    template = "admin/installations/installation/tabular_history.html"


class StatusChangeInline(ReadOnlyInline):
    model = StatusChange
    fields = readonly_fields = ("created_at", "from_status", "to_status", "cause")


class WebhookRegistrationInline(ReadOnlyInline):
    model = WebhookRegistration
    fields = readonly_fields = ("event", "url", "shoptet_id", "updated_at")


class RegistrationDriftInline(ReadOnlyInline):
    """What the registration watchdog found wrong at Shoptet and repaired, newest first."""

    model = RegistrationDrift
    verbose_name_plural = "webhook registration drift"
    fields = readonly_fields = ("detected_at", "missing", "wrong_url", "strays", "repaired", "error")


class SyncCursorInline(ReadOnlyInline):
    """Where each resource's `/changes` read starts, and the failed runs being retried."""

    model = SyncCursor
    verbose_name_plural = "changes cursors"
    fields = readonly_fields = ("resource", "changes_from", "failures", "failed_at", "retry_at", "error")


class SettingsFieldFilter(FixedChoicesFilter):
    """The settings page's fields."""

    title = "setting"
    parameter_name = field = "field"

    def options(self) -> list[tuple[str, str]]:
        return [(name, name.replace("_", " ")) for name in addon_services.SETTINGS_FIELDS]


@cache
def _data_lists() -> list[tuple[str, str, Callable[[], QuerySet[Any]]]]:
    """Each list of an e-shop's data: its label, its admin URL (reversed once per process) and its rows."""
    return [
        ("orders", reverse("admin:sync_order_changelist"), lambda: Order.objects.filter(deleted_at__isnull=True)),
        ("invoices", reverse("admin:sync_invoice_changelist"), lambda: Invoice.objects.filter(deleted_at__isnull=True)),
        ("sync jobs", reverse("admin:sync_syncjob_changelist"), SyncJob.objects.all),
        ("webhook deliveries", reverse("admin:webhooks_webhookdelivery_changelist"), WebhookDelivery.objects.all),
    ]


@admin.register(Installation)
class InstallationAdmin(admin.ModelAdmin[Installation]):
    list_display = [
        "eshop_id",
        "name",
        "eshop_url",
        "status_badge",
        "onboarding_badge",
        "webhooks_summary",
        "last_webhook_at",
        "installed_at",
        "data_links",
        "data_purge",
    ]
    list_filter = ["status", "onboarding_status", ("installed_at", admin.DateFieldListFilter)]
    search_fields = ["=eshop_id", "name", "eshop_url", "contact_email"]
    search_help_text = "Exact e-shop id, or part of the name, URL or contact e-mail."
    ordering = ["-installed_at"]
    show_full_result_count = False
    fieldsets = [
        ("E-shop", {"fields": ["eshop_id", "name", "eshop_url", "contact_email", "timezone", "oauth_url"]}),
        (
            "Health",
            {
                "fields": [
                    "status_badge",
                    "onboarding_badge",
                    "onboarding_error",
                    "token_health",
                    "signature_key_health",
                    "last_webhook_at",
                    "webhooks_health",
                    "changes_health",
                    "data_counts",
                    "data_purge",
                ]
            },
        ),
        (
            "History",
            {
                "fields": [
                    "status_changed_at",
                    "installed_at",
                    "suspended_at",
                    "uninstalled_at",
                    "terminated_at",
                    "onboarded_at",
                    "signature_key_renewed_at",
                ]
            },
        ),
    ]
    readonly_fields = (
        "eshop_id",
        "name",
        "eshop_url",
        "contact_email",
        "timezone",
        "oauth_url",
        "status_badge",
        "onboarding_badge",
        "onboarding_error",
        "token_health",
        "signature_key_health",
        "last_webhook_at",
        "webhooks_health",
        "changes_health",
        "data_counts",
        "data_purge",
        "status_changed_at",
        "installed_at",
        "suspended_at",
        "uninstalled_at",
        "terminated_at",
        "onboarded_at",
        "signature_key_renewed_at",
    )
    inlines = [SyncCursorInline, WebhookRegistrationInline, RegistrationDriftInline, StatusChangeInline]
    actions = ["rerun_onboarding", "renew_signature_key", "refresh_identity", "start_sync", "export_data", "purge_data"]
    change_list_template = "admin/installations/installation/change_list.html"
    change_form_template = "admin/installations/installation/change_form.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tenants come only from Shoptet's install callback

    def get_queryset(self, request: HttpRequest) -> QuerySet[Installation]:
        latest_drift = RegistrationDrift.objects.filter(installation=OuterRef("pk")).order_by("-detected_at", "-id")
        registered = (
            WebhookRegistration.objects.filter(installation=OuterRef("pk"))
            .order_by()
            .values("installation")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return (
            super()
            .get_queryset(request)
            # Never decrypted for a page: the columns stay in the database, only their presence is read.
            .defer(*SECRET_FIELDS)
            .annotate(
                registered_webhooks=Coalesce(Subquery(registered), 0),
                # Whether the watchdog's latest finding is still unrepaired.
                drift_unrepaired=Subquery(
                    latest_drift.annotate(
                        unrepaired=ExpressionWrapper(Q(repaired=False) | ~Q(error=""), output_field=BooleanField())
                    ).values("unrepaired")[:1]
                ),
                has_oauth_token=ExpressionWrapper(~Q(oauth_token=EMPTY), output_field=BooleanField()),
                has_signature_key=ExpressionWrapper(~Q(webhook_signature_key=EMPTY), output_field=BooleanField()),
                has_previous_signature_key=ExpressionWrapper(
                    ~Q(previous_webhook_signature_key=EMPTY), output_field=BooleanField()
                ),
            )
        )

    # ------------------------------------------------------------------
    # Columns and health
    # ------------------------------------------------------------------

    @admin.display(description="data purged")
    def data_purge(self, installation: Installation) -> str:
        due = retention.purge_due_at(installation)
        if due is None:
            return "kept for ever" if installation.status in retention.ENDED else "—"
        return f"{'on' if due > timezone.now() else 'since'} {timezone.localtime(due):%Y-%m-%d %H:%M}"

    @admin.display(description="status", ordering="status")
    def status_badge(self, installation: Installation) -> str:
        colour = STATUS_COLOURS.get(Installation.Status(installation.status), "#333")
        return badge(colour, installation.get_status_display())

    @admin.display(description="onboarding", ordering="onboarding_status")
    def onboarding_badge(self, installation: Installation) -> str:
        colour = ONBOARDING_COLOURS.get(Installation.Onboarding(installation.onboarding_status), "#333")
        return badge(colour, installation.get_onboarding_status_display())

    @admin.display(description="webhooks")
    def webhooks_summary(self, installation: Installation) -> str:
        registered = getattr(installation, "registered_webhooks", 0)
        wanted = len(settings.SHOPTET_WEBHOOK_EVENTS) if installation.is_active else 0
        text = f"{registered}/{wanted}" if wanted else str(registered)
        if getattr(installation, "drift_unrepaired", None):
            return format_html('{} <strong style="color:#a11c1c">drift</strong>', text)
        return text

    @admin.display(description="API access")
    def token_health(self, installation: Installation) -> str:
        if not getattr(installation, "has_oauth_token", True):
            return "No OAuth token stored: the e-shop must install the addon again."
        if not installation.is_active:
            return f"OAuth token stored; no API calls while the installation is {installation.get_status_display()}."
        token = tokens.cached_token(installation)
        if token is None:
            return "OAuth token stored; no API token cached (the next call mints one)."
        minutes = max(0, int((token.expires_at - time.time()) // 60))
        if not token.fresh:
            return f"OAuth token stored; API token expires in {minutes} min (the next call mints a new one)."
        return f"OAuth token stored; API token cached, valid {minutes} more min."

    @admin.display(description="webhook signature key")
    def signature_key_health(self, installation: Installation) -> str:
        if not getattr(installation, "has_signature_key", True):
            return "None stored: onboarding fetches one (webhooks are rejected until then)."
        text = f"Stored, renewed {installation.signature_key_renewed_at:%Y-%m-%d %H:%M} UTC."
        renewed = installation.signature_key_renewed_at
        if (
            getattr(installation, "has_previous_signature_key", False)
            and renewed
            and timezone.now() < renewed + settings.WEBHOOK_SIGNATURE_GRACE
        ):
            text += " The previous key is still accepted (grace window)."
        return text

    @admin.display(description="registered webhooks")
    def webhooks_health(self, installation: Installation) -> str:
        registered = set(installation.webhook_registrations.values_list("event", flat=True))
        wanted = set(settings.SHOPTET_WEBHOOK_EVENTS) if installation.is_active else set()
        missing, extra = sorted(wanted - registered), sorted(registered - wanted)
        parts = [f"{len(registered)} registered"]
        if missing:
            parts.append(f"missing: {', '.join(missing)}")
        if extra:
            parts.append(f"not wanted: {', '.join(extra)}")
        if getattr(installation, "drift_unrepaired", None):
            parts.append("the last drift found was not repaired (see below)")
        return "; ".join(parts)

    @admin.display(description="changes sync")
    def changes_health(self, installation: Installation) -> str:
        failing = installation.sync_cursors.filter(failures__gt=0).order_by("resource")
        if not failing:
            return "Every /changes run since the last failure completed."
        return "; ".join(changes_failure(cursor, installation) for cursor in failing)

    @admin.display(description="data")
    def data_links(self, installation: Installation) -> str:
        return format_html_join(" · ", '<a href="{}">{}</a>', self._links(installation, counts=False))

    @admin.display(description="data")
    def data_counts(self, installation: Installation) -> str:
        return format_html_join(" · ", '<a href="{}">{}</a>', self._links(installation, counts=True))

    def _links(self, installation: Installation, *, counts: bool) -> list[tuple[str, str]]:
        """Links to the e-shop's rows in each list; with `counts`, how many (the change page only: a query each)."""
        query = urlencode({EshopFilter.parameter_name: installation.eshop_id})
        links = []
        for label, url, rows in _data_lists():
            if counts:
                label = f"{rows().filter(installation=installation).count()} {label}"
            links.append((f"{url}?{query}", label))
        return links

    # ------------------------------------------------------------------
    # Actions: each one is recorded in the admin log
    # ------------------------------------------------------------------

    @admin.action(description="Rerun onboarding (identity, signature key, webhooks)", permissions=["change"])
    def rerun_onboarding(self, request: HttpRequest, queryset: QuerySet[Installation]) -> None:
        active = list(queryset.filter(status=Installation.Status.ACTIVE))
        count = Installation.objects.filter(pk__in=[installation.pk for installation in active]).update(
            onboarding_status=Installation.Onboarding.PENDING, onboarding_enqueued_at=None, onboarding_error=""
        )
        audit(request, active, "Reran onboarding.")
        self.message_user(request, f"Onboarding queued for {count} active installations.", messages.SUCCESS)

    @admin.action(
        description="Renew the webhook signature key (the old one is accepted until a grace window ends)",
        permissions=["change"],
    )
    def renew_signature_key(self, request: HttpRequest, queryset: QuerySet[Installation]) -> None:
        active = list(queryset.filter(status=Installation.Status.ACTIVE))
        for installation in active:
            services.request_signature_key_renewal(installation=installation)
        audit(request, active, "Requested a new webhook signature key.")
        self.message_user(request, f"Key renewal queued for {len(active)} active installations.", messages.SUCCESS)

    @admin.action(
        description="Refresh the e-shop's identity from Shoptet (name, URL, time zone)", permissions=["change"]
    )
    def refresh_identity(self, request: HttpRequest, queryset: QuerySet[Installation]) -> None:
        refreshed = []
        for installation in queryset.filter(status=Installation.Status.ACTIVE):
            try:
                services.refresh_identity(installation=installation)
            except ShoptetError as error:
                self.message_user(request, f"{installation}: {error}", messages.ERROR)
                continue
            refreshed.append(installation)
        audit(request, refreshed, "Refreshed the e-shop's identity from Shoptet.")
        self.message_user(request, f"Identity refreshed for {len(refreshed)} active installations.", messages.SUCCESS)

    @admin.action(description="Start a sync of orders or invoices", permissions=["change"])
    def start_sync(self, request: HttpRequest, queryset: QuerySet[Installation]) -> TemplateResponse | None:
        form = StartSyncForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "title": "Start a sync",
                "opts": self.opts,
                "form": form,
                "installations": queryset,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/installations/installation/start_sync.html", context)
        resource, mode = form.cleaned_data["resource"], form.cleaned_data["mode"]
        started = []
        for installation in queryset:
            try:
                job = sync_jobs.request_sync(
                    installation=installation, resource=resource, mode=mode, cause=f"admin ({request.user})"
                )
            except sync_jobs.SyncError as error:
                self.message_user(request, f"{installation}: {error}", messages.WARNING)
                continue
            sync_tasks.enqueue(job)
            started.append(installation)
        audit(request, started, f"Started a sync: {mode} of {resource}.")
        self.message_user(request, f"{mode.capitalize()} of {resource} started for {len(started)} installations.")
        return None

    @admin.action(description="Export the e-shop's data (gzip JSON lines)", permissions=["view"])
    def export_data(self, request: HttpRequest, queryset: QuerySet[Installation]) -> StreamingHttpResponse | None:
        chosen = list(queryset.defer(*SECRET_FIELDS)[:2])
        if len(chosen) != 1:
            self.message_user(request, "Choose exactly one installation to export.", messages.WARNING)
            return None
        installation = chosen[0]
        audit(request, [installation], "Exported the e-shop's data.")
        response = StreamingHttpResponse(export.gzip_lines(installation), content_type="application/gzip")
        response["Content-Disposition"] = f'attachment; filename="{export.filename(installation)}"'
        return response

    @admin.action(
        description="Purge the e-shop's data now (orders, invoices, deliveries, sync jobs)", permissions=["delete"]
    )
    def purge_data(self, request: HttpRequest, queryset: QuerySet[Installation]) -> TemplateResponse | None:
        # Only ended tenants: an active one would be mirrored again at once, a suspended one may come back.
        ended = list(queryset.filter(status__in=retention.ENDED).defer(*SECRET_FIELDS))
        if "apply" not in request.POST:
            context = {
                **self.admin_site.each_context(request),
                "title": "Purge the e-shops' data now",
                "opts": self.opts,
                "installations": ended,
                "refused": queryset.exclude(status__in=retention.ENDED),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/installations/installation/purge_data.html", context)
        for installation in ended:
            outcome = retention.purge_tenant_data(installation=installation)
            audit(request, [installation], f"Purged the e-shop's data now ({outcome.total} rows deleted).")
        self.message_user(request, f"Data purged for {len(ended)} uninstalled or terminated installations.")
        return None

    # ------------------------------------------------------------------
    # Extra pages: view as e-shop, demo install
    # ------------------------------------------------------------------

    def get_urls(self) -> list[Any]:
        return [
            path("install-demo/", self.admin_site.admin_view(self.install_demo_view), name="install-demo-eshop"),
            path(
                "<path:object_id>/view-as-eshop/",
                self.admin_site.admin_view(self.view_as_eshop_view),
                name="installations_installation_view_as_eshop",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "demo_available": demo.demo_available()}
        return super().changelist_view(request, extra_context=extra_context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        installation = self.get_object(request, object_id)
        extra_context = {
            **(extra_context or {}),
            "can_view_as_eshop": bool(
                installation and installation.is_active and self.has_change_permission(request, installation)
            ),
            # Buttons that run the list's actions on this one installation.
            "installation_actions": [
                ("refresh_identity", "Refresh identity"),
                ("start_sync", "Start a sync"),
                ("rerun_onboarding", "Rerun onboarding"),
                ("renew_signature_key", "Renew signature key"),
            ],
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def view_as_eshop_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Open the e-shop admins' settings page as this e-shop, with a fresh session token; recorded."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        installation = self.get_object(request, object_id)
        if installation is None:
            raise Http404("No such installation.")
        if not self.has_change_permission(request, installation):
            raise PermissionDenied
        if not installation.is_active:
            self.message_user(
                request,
                f"The settings page opens only for active installations; this one is {installation.status}.",
                messages.ERROR,
            )
            return HttpResponseRedirect(reverse("admin:installations_installation_change", args=[installation.pk]))
        audit(request, [installation], "Opened the addon settings page as the e-shop.")
        return HttpResponseRedirect(settings_page_url(installation, request))

    def install_demo_view(self, request: HttpRequest) -> HttpResponse:
        changelist = reverse("admin:installations_installation_changelist")
        if request.method != "POST":
            return HttpResponseRedirect(changelist)
        try:
            result = demo.install_demo_eshop()
        except demo.DemoUnavailable as error:
            self.message_user(request, str(error), messages.ERROR)
            return HttpResponseRedirect(changelist)
        if result.succeeded:
            self.message_user(request, "Demo e-shop installed; onboarding runs in the worker.", messages.SUCCESS)
        else:
            self.message_user(request, f"Install callback answered HTTP {result.status}: {result.body}", messages.ERROR)
        return HttpResponseRedirect(changelist)


def settings_page_url(installation: Installation, request: HttpRequest) -> str:
    """The settings page's overview for `installation`, signed in as the staff user (named as such on the page)."""
    user = request.user
    session = auth.Admin(
        eshop_id=installation.eshop_id,
        installation_id=installation.pk,
        email=getattr(user, "email", "") or f"staff-{user.pk}@partner-staff.invalid",
        name=f"Partner staff: {user}"[:255],
        language=auth.DEFAULT_LANGUAGE,
        session_id=secrets.token_urlsafe(16),
        logged_in_at=int(time.time()),
    )
    query = {"eshopId": installation.eshop_id, "language": session.language, "t": auth.issue_token(session)}
    return f"{reverse('addon-overview')}?{urlencode(query)}"


@admin.register(InstallAttempt)
class InstallAttemptAdmin(ReadOnlyMixin, admin.ModelAdmin[InstallAttempt]):
    deletable = True
    list_display = ["created_at", "outcome", "eshop_id", "error", "duration_ms", "remote_addr"]
    list_filter = ["outcome"]
    search_fields = ["=eshop_id", "error", "=code_fingerprint"]
    list_select_related = ["installation"]
    fields = readonly_fields = (
        "created_at",
        "outcome",
        "eshop_id",
        "installation",
        "error",
        "code_fingerprint",
        "remote_addr",
        "duration_ms",
    )


@admin.register(AddonSettings)
class AddonSettingsAdmin(ReadOnlyMixin, admin.ModelAdmin[AddonSettings]):
    """Read-only: the e-shop's admins change these on the settings page, where each change is recorded."""

    deletable = True

    list_display = ["installation", "sync_orders", "sync_invoices", "import_since", "notification_email", "updated_at"]
    list_filter = ["sync_orders", "sync_invoices"]
    list_select_related = ["installation"]
    search_fields = ["=installation__eshop_id", "installation__name", "notification_email"]
    fields = readonly_fields = (
        "installation",
        "sync_orders",
        "sync_invoices",
        "import_since",
        "notification_email",
        "updated_at",
        "updated_by",
    )


@admin.register(SettingsChange)
class SettingsChangeAdmin(ReadOnlyMixin, admin.ModelAdmin[SettingsChange]):
    list_display = ["created_at", "installation", "field", "old_value", "new_value", "admin_email"]
    list_filter = [SettingsFieldFilter, EshopFilter]
    list_select_related = ["installation"]
    search_fields = ["=installation__eshop_id", "admin_email"]
    fields = readonly_fields = (
        "created_at",
        "installation",
        "field",
        "old_value",
        "new_value",
        "admin_email",
        "admin_name",
    )
