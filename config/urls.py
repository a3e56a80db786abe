"""URL routes; the public paths are fixed by INTERFACE.md."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from config import health
from installations import views as installation_views

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("shoptet/install/", installation_views.install, name="shoptet-install"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("config.api_urls")),
]
