"""Staff's record of every notification e-mail: read-only, since it says what happened."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest

from config.admin import EshopFilter, FixedChoicesFilter, ReadOnlyMixin
from notifications.models import Notification


class LanguageFilter(FixedChoicesFilter):
    """The languages mails are written in."""

    title = parameter_name = field = "language"

    def options(self) -> list[tuple[str, str]]:
        return [(code, str(name)) for code, name in settings.LANGUAGES]


@admin.register(Notification)
class NotificationAdmin(ReadOnlyMixin, admin.ModelAdmin[Notification]):
    list_display = ["created_at", "installation", "kind", "day", "status", "recipient", "language", "attempts"]
    list_filter = ["status", "kind", LanguageFilter, "day", ("created_at", admin.DateFieldListFilter), EshopFilter]
    list_select_related = ["installation"]
    search_fields = ["=installation__eshop_id", "recipient"]
    search_help_text = "The exact e-shop id, or the recipient's address."
    show_full_result_count = False
    fields = readonly_fields = (
        "installation",
        "kind",
        "day",
        "status",
        "recipient",
        "language",
        "attempts",
        "error",
        "enqueued_at",
        "created_at",
        "finished_at",
    )

    def get_queryset(self, request: HttpRequest) -> Any:
        # The installation's encrypted secrets are never loaded for a list of mails.
        return (
            super()
            .get_queryset(request)
            .defer(
                "installation__oauth_token",
                "installation__webhook_signature_key",
                "installation__previous_webhook_signature_key",
            )
        )
