"""Admin pieces every app shares (read-only mixin, badges, filters, the audit log) and REST API tokens never shown.

Everything staff change through the admin is in Django's admin log (`LogEntry`): saves by Django itself,
custom actions through `audit()`. Staff read it under Administration → Log entries. The site and its
dashboard are in config.dashboard.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib import admin
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from shoptet_api.ids import InvalidEshopId, parse_eshop_id


def audit(request: HttpRequest, objects: Iterable[Model], message: str, *, action_flag: int = CHANGE) -> None:
    """Record an admin action on each object in the admin log, as Django records its own changes."""
    rows, user_id = list(objects), request.user.pk
    if rows and user_id is not None:
        LogEntry.objects.log_actions(user_id=user_id, queryset=rows, action_flag=action_flag, change_message=message)


class ReadOnlyMixin:
    """Rows the platform writes: staff read them, never add one; `editable`/`deletable` open what an admin needs."""

    editable = False
    deletable = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.editable and super().has_change_permission(request, obj)  # type: ignore[misc]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.deletable and super().has_delete_permission(request, obj)  # type: ignore[misc]


def badge(colour: str, text: str) -> str:
    """A status as a coloured pill, the same in every list."""
    return format_html(
        '<strong style="color:#fff;background:{};padding:2px 8px;border-radius:8px">{}</strong>', colour, text
    )


def shorten(text: str, limit: int = 80) -> str:
    """A long error or id cut for a list column; the detail page shows all of it."""
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


class LogEntryAdmin(ReadOnlyMixin, admin.ModelAdmin[LogEntry]):
    """The audit log: every change made through the admin, custom actions and "view as e-shop" included."""

    list_display = ["action_time", "user", "action", "content_type", "target", "message"]
    list_filter = ["action_flag", "content_type", "user", ("action_time", admin.DateFieldListFilter)]
    list_select_related = ["user", "content_type"]
    search_fields = ["object_repr", "change_message", "user__username", "=object_id"]
    search_help_text = "Object, message, staff user name, or the exact object id."
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


# Above this many rows (by the planner's estimate) an unfiltered list shows the estimate instead of counting.
ESTIMATE_COUNTS_ABOVE = 100_000
# A filtered list counts its rows up to this many: a filter that matches most of a large table (every CZK
# order) would otherwise read all of them on every page.
COUNT_FILTERED_UP_TO = 10_000


class EstimatedCountPaginator(Paginator):
    """Counts an unfiltered large table from PostgreSQL's statistics (`reltuples`), not with COUNT(*),
    which reads the whole table on every page, and a filtered list only up to COUNT_FILTERED_UP_TO rows;
    small tables are counted exactly. `estimated` and `capped` say which the list shows."""

    estimated = False
    capped = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet) or connection.vendor != "postgresql":
            return int(super().count)
        if not queryset.query.where:
            estimate = planner_estimate(queryset.model._meta.db_table)
            if estimate > ESTIMATE_COUNTS_ABOVE:
                self.estimated = True
                return estimate
            return int(super().count)
        counted = queryset.order_by().values("pk")[:COUNT_FILTERED_UP_TO].count()
        self.capped = counted >= COUNT_FILTERED_UP_TO
        return counted


def planner_estimate(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [table])
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else -1


class TypedValueFilter(admin.SimpleListFilter):
    """Filter by a value typed into a box. A sidebar of every value would list thousands of e-shops, or
    read a whole table of millions of rows for its distinct values (Django's AllValuesFieldListFilter)."""

    field = ""  # the lookup the typed value is matched against exactly
    placeholder = ""
    input_mode = "text"
    all_label = "All"
    max_length = 255
    template = "admin/typed_value_filter.html"

    def __init__(self, request: HttpRequest, params: dict[str, Any], model: Any, model_admin: Any) -> None:
        super().__init__(request, params, model, model_admin)
        # The box's form keeps the list's other filters and search.
        self.other_params = [
            (name, value) for name, values in request.GET.lists() if name != self.parameter_name for value in values
        ]

    def has_output(self) -> bool:
        return True

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return []  # never a list of values

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = (self.value() or "").strip()
        if not value:
            return queryset
        if len(value) > self.max_length:
            return queryset.none()  # longer than the column: nothing can match
        return queryset.filter(**{self.field: value})


class FixedChoicesFilter(admin.SimpleListFilter):
    """Filter by one of a fixed set of values that the code knows (`options`), never the values a scan of
    the table finds in use; a value outside them matches nothing."""

    field = ""  # the lookup the chosen value is matched against exactly

    def options(self) -> list[tuple[str, str]]:
        """(value, label) of each choice."""
        raise NotImplementedError

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return self.options()

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        if value not in dict(self.options()):
            return queryset.none()
        return queryset.filter(**{self.field: value})


class EshopFilter(TypedValueFilter):
    """Filter by e-shop id typed into a box: a sidebar listing every e-shop is too long at thousands of them."""

    title = "e-shop"
    parameter_name = "eshop"
    placeholder = "e-shop id"
    input_mode = "numeric"
    all_label = "All e-shops"

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        try:
            eshop_id = parse_eshop_id(value)
        except InvalidEshopId:
            return queryset.none()  # a mistyped id finds nothing, as a search would
        return queryset.filter(installation__eshop_id=eshop_id)
