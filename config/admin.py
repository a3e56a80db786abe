"""Admin pieces of the platform itself: the audit log, and REST API tokens that are never shown.

Everything staff change through the admin is in Django's admin log (`LogEntry`): saves by Django itself,
custom actions through `audit()`. Staff read it under Administration → Log entries. The site and its
dashboard are in config.dashboard.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib import admin
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.db.models import Model
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy


def audit(request: HttpRequest, objects: Iterable[Model], message: str, *, action_flag: int = CHANGE) -> None:
    """Record an admin action on each object in the admin log, as Django records its own changes."""
    rows, user_id = list(objects), request.user.pk
    if rows and user_id is not None:
        LogEntry.objects.log_actions(user_id=user_id, queryset=rows, action_flag=action_flag, change_message=message)


class LogEntryAdmin(admin.ModelAdmin[LogEntry]):
    """The audit log: every change made through the admin, custom actions and "view as e-shop" included."""

    list_display = ["action_time", "user", "action", "content_type", "target", "message"]
    list_filter = ["action_flag", "content_type", "user"]
    list_select_related = ["user", "content_type"]
    search_fields = ["object_repr", "change_message", "user__username", "=object_id"]
    search_help_text = "Object, message, staff user name, or the exact object id."
    date_hierarchy = "action_time"
    show_full_result_count = False
    fields = readonly_fields = (
        "action_time",
        "user",
        "action",
        "content_type",
        "object_id",
        "object_repr",
        "message",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # an audit log nobody can edit

    @admin.display(description="action", ordering="action_flag")
    def action(self, entry: LogEntry) -> str:
        return {ADDITION: "Added", CHANGE: "Changed", DELETION: "Deleted"}.get(entry.action_flag, "?")

    @admin.display(description="object", ordering="object_repr")
    def target(self, entry: LogEntry) -> str:
        content_type = entry.content_type
        if content_type and entry.object_id and entry.action_flag != DELETION:
            try:
                url = reverse(f"admin:{content_type.app_label}_{content_type.model}_change", args=[entry.object_id])
            except NoReverseMatch:  # a model no longer in the admin: the name only
                return entry.object_repr
            return format_html('<a href="{}">{}</a>', url, entry.object_repr)
        return entry.object_repr

    @admin.display(description="message")
    def message(self, entry: LogEntry) -> str:
        return entry.get_change_message()


class ApiTokenAdmin(TokenAdmin):
    """REST API tokens: who has one and since when, never the key (`manage.py drf_create_token` prints it once)."""

    list_display = ("user", "created")
    list_select_related = ["user"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a key made here could never be read: create it with drf_create_token


def _token_name(token: TokenProxy) -> str:
    return f"API token of {token.user}"


def register_platform_admins() -> None:
    # DRF's token names itself by its key, and the admin shows that name in titles, breadcrumbs, the history
    # and the audit log; the admin's proxy of it is named after its user instead. Authentication uses Token.
    TokenProxy.__str__ = _token_name  # type: ignore[method-assign,assignment]
    site = admin.site
    site.register(LogEntry, LogEntryAdmin)
    if site.is_registered(TokenProxy):
        site.unregister(TokenProxy)
    site.register(TokenProxy, ApiTokenAdmin)
