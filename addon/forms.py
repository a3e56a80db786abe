"""The addon's own settings, as the e-shop admin edits them."""

from __future__ import annotations

from datetime import date

from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from installations.models import AddonSettings

# Shoptet keeps e-shop data since the platform exists; an earlier date is a typo.
EARLIEST_IMPORT_DATE = date(2008, 1, 1)


class AddonSettingsForm(forms.ModelForm):
    class Meta:
        model = AddonSettings
        fields = ["sync_orders", "sync_invoices", "import_since", "notification_email"]
        labels = {
            "sync_orders": _("Sync orders"),
            "sync_invoices": _("Sync invoices"),
            "import_since": _("Import documents created from"),
            "notification_email": _("Notification e-mail"),
        }
        help_texts = {
            "sync_orders": _("Keep a copy of every order and its changes."),
            "sync_invoices": _("Keep a copy of every invoice and its changes."),
            "import_since": _("Leave empty to import everything Shoptet still has."),
            "notification_email": _("We write here when a sync fails. Leave empty for no e-mails."),
        }
        widgets = {
            "import_since": forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
            "notification_email": forms.EmailInput(attrs={"autocomplete": "email"}),
        }

    def clean_import_since(self) -> date | None:
        value: date | None = self.cleaned_data.get("import_since")
        if value is None:
            return None
        if value > timezone.localdate():
            raise forms.ValidationError(_("The date cannot be in the future."), code="future")
        if value < EARLIEST_IMPORT_DATE:
            raise forms.ValidationError(
                _("Enter a date from %(earliest)s on.") % {"earliest": EARLIEST_IMPORT_DATE.isoformat()},
                code="too_early",
            )
        return value
