from __future__ import annotations

from django.apps import AppConfig


class RollupsConfig(AppConfig):
    name = "rollups"
    verbose_name = "Hourly statistics"
