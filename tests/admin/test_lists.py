"""Every admin list can be searched and filtered."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.models import Group

# A group has a name and permissions only: searching by name is all there is.
NOTHING_TO_FILTER = {Group}


def test_every_list_is_searchable_and_filterable() -> None:
    for model, model_admin in admin.site._registry.items():
        assert model_admin.search_fields, f"{model.__name__}: no search"
        assert model_admin.list_filter or model in NOTHING_TO_FILTER, f"{model.__name__}: no filters"
