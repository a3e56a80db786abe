"""URL routes; the public paths are fixed by INTERFACE.md."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from addon import views as addon_views
from config import health, metrics
from installations import views as installation_views
from webhooks import views as webhook_views

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("shoptet/install/", installation_views.install, name="shoptet-install"),
    path("shoptet/webhooks/", webhook_views.receive, name="shoptet-webhooks"),
    path("addon/settings/", addon_views.entry, name="addon-settings"),
    path("addon/settings/overview/", addon_views.overview, name="addon-overview"),
    path("addon/settings/progress/", addon_views.progress, name="addon-progress"),
    path("addon/settings/resync/", addon_views.resync, name="addon-resync"),
    path("addon/settings/deliveries/", addon_views.deliveries, name="addon-deliveries"),
    path("addon/settings/preferences/", addon_views.preferences, name="addon-preferences"),
    path("addon/settings/export/", addon_views.export_download, name="addon-export"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("config.api_urls")),
]

handler404 = "config.rest.page_not_found"
handler500 = "config.rest.server_error"
