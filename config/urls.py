"""URL routes; the public paths are fixed by INTERFACE.md."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from config import health, metrics
from installations import settings_page
from installations import views as installation_views
from webhooks import views as webhook_views

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("shoptet/install/", installation_views.install, name="shoptet-install"),
    path("shoptet/webhooks/", webhook_views.receive, name="shoptet-webhooks"),
    path("addon/settings/", settings_page.entry, name="addon-settings"),
    path("addon/settings/overview/", settings_page.overview, name="addon-overview"),
    path("addon/settings/progress/", settings_page.progress, name="addon-progress"),
    path("addon/settings/resync/", settings_page.resync, name="addon-resync"),
    path("addon/settings/deliveries/", settings_page.deliveries, name="addon-deliveries"),
    path("addon/settings/preferences/", settings_page.preferences, name="addon-preferences"),
    path("addon/settings/export/", settings_page.export_download, name="addon-export"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("config.api_urls")),
]

handler404 = "config.rest.page_not_found"
handler500 = "config.rest.server_error"
