from __future__ import annotations

from django.apps import AppConfig


class AddonConfig(AppConfig):
    name = "addon"
    label = "addon"
    verbose_name = "Addon settings page"
