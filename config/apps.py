"""Django's admin app with the platform's admin site (config.dashboard.PlatformAdminSite)."""

from __future__ import annotations

from django.contrib.admin.apps import AdminConfig


class PlatformAdminConfig(AdminConfig):
    default_site = "config.dashboard.PlatformAdminSite"

    def ready(self) -> None:
        super().ready()  # every app's admin.py is registered by now
        from config import admin

        admin.register_platform_admins()
