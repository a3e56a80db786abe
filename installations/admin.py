"""Partner staff's view of tenants. Secrets never appear here: the encrypted fields are not in any form."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html

from installations import demo, services
from installations.models import AddonSettings, Installation, InstallAttempt, SettingsChange, StatusChange
from webhooks.models import RegistrationDrift, WebhookRegistration

STATUS_COLOURS = {
    Installation.Status.ACTIVE: "#1f7a3a",
    Installation.Status.SUSPENDED: "#a15c00",
    Installation.Status.UNINSTALLED: "#6b6b6b",
    Installation.Status.TERMINATED: "#a11c1c",
}


class StatusChangeInline(admin.TabularInline[StatusChange, Installation]):
    model = StatusChange
    extra = 0
    can_delete = False
    fields = readonly_fields = ("created_at", "from_status", "to_status", "cause")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class WebhookRegistrationInline(admin.TabularInline[WebhookRegistration, Installation]):
    model = WebhookRegistration
    extra = 0
    can_delete = False
    fields = readonly_fields = ("event", "url", "shoptet_id", "updated_at")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RegistrationDriftInline(admin.TabularInline[RegistrationDrift, Installation]):
    """What the registration watchdog found wrong at Shoptet and repaired, newest first."""

    model = RegistrationDrift
    extra = 0
    can_delete = False
    verbose_name_plural = "webhook registration drift"
    fields = readonly_fields = ("detected_at", "missing", "wrong_url", "strays", "repaired", "error")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Installation)
class InstallationAdmin(admin.ModelAdmin[Installation]):
    list_display = [
        "eshop_id",
        "name",
        "eshop_url",
        "status_badge",
        "onboarding_status",
        "installed_at",
        "last_webhook_at",
    ]
    list_filter = ["status", "onboarding_status"]
    search_fields = ["=eshop_id", "name", "eshop_url", "contact_email"]
    ordering = ["-installed_at"]
    fields = readonly_fields = (
        "eshop_id",
        "eshop_url",
        "name",
        "contact_email",
        "timezone",
        "oauth_url",
        "status",
        "status_changed_at",
        "installed_at",
        "suspended_at",
        "uninstalled_at",
        "terminated_at",
        "onboarding_status",
        "onboarding_error",
        "onboarded_at",
        "signature_key_renewed_at",
        "last_webhook_at",
    )
    inlines = [WebhookRegistrationInline, RegistrationDriftInline, StatusChangeInline]
    actions = ["rerun_onboarding", "renew_signature_key"]
    change_list_template = "admin/installations/installation/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tenants come only from Shoptet's install callback

    @admin.display(description="status", ordering="status")
    def status_badge(self, installation: Installation) -> str:
        colour = STATUS_COLOURS.get(Installation.Status(installation.status), "#333")
        return format_html(
            '<strong style="color:#fff;background:{};padding:2px 8px;border-radius:8px">{}</strong>',
            colour,
            installation.get_status_display(),
        )

    @admin.action(description="Rerun onboarding (identity, signature key, webhooks)")
    def rerun_onboarding(self, request: HttpRequest, queryset: QuerySet[Installation]) -> None:
        count = queryset.filter(status=Installation.Status.ACTIVE).update(
            onboarding_status=Installation.Onboarding.PENDING, onboarding_enqueued_at=None, onboarding_error=""
        )
        self.message_user(request, f"Onboarding queued for {count} active installations.", messages.SUCCESS)

    @admin.action(description="Renew the webhook signature key (the old one is accepted until a grace window ends)")
    def renew_signature_key(self, request: HttpRequest, queryset: QuerySet[Installation]) -> None:
        active = list(queryset.filter(status=Installation.Status.ACTIVE))
        for installation in active:
            services.request_signature_key_renewal(installation=installation)
        self.message_user(request, f"Key renewal queued for {len(active)} active installations.", messages.SUCCESS)

    def get_urls(self) -> list[Any]:
        return [
            path("install-demo/", self.admin_site.admin_view(self.install_demo_view), name="install-demo-eshop"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "demo_available": demo.demo_available()}
        return super().changelist_view(request, extra_context=extra_context)

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


@admin.register(InstallAttempt)
class InstallAttemptAdmin(admin.ModelAdmin[InstallAttempt]):
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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AddonSettings)
class AddonSettingsAdmin(admin.ModelAdmin[AddonSettings]):
    """Read-only: the e-shop's admins change these on the settings page, where each change is recorded."""

    list_display = ["installation", "sync_orders", "sync_invoices", "import_since", "notification_email", "updated_at"]
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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SettingsChange)
class SettingsChangeAdmin(admin.ModelAdmin[SettingsChange]):
    list_display = ["created_at", "installation", "field", "old_value", "new_value", "admin_email"]
    list_filter = ["field"]
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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
