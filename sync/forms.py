"""The one form that asks staff which sync to start: a resource and a mode."""

from __future__ import annotations

from django import forms

from sync.models import SyncJob


class StartSyncForm(forms.Form):
    resource = forms.ChoiceField(choices=SyncJob.Resource.choices)
    mode = forms.ChoiceField(choices=SyncJob.Mode.choices)
