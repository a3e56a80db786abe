from __future__ import annotations

from django.apps import AppConfig


class InstallationsConfig(AppConfig):
    name = "installations"
    verbose_name = "Installations"
