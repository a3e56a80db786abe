"""REST API v1 routes (INTERFACE.md)."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from installations.api import InstallationViewSet
from sync.api import InvoiceViewSet, OrderViewSet, SyncJobViewSet, SyncView
from webhooks.api import WebhookDeliveryViewSet

router = SimpleRouter()
router.register("installations", InstallationViewSet, basename="installation")
router.register("webhook-deliveries", WebhookDeliveryViewSet, basename="webhook-delivery")

# One installation's synced data. Codes may contain `/`, so the detail routes take the rest of the path.
ESHOP = "installations/<int:eshop_id>"

urlpatterns = [
    *router.urls,
    # The OpenAPI schema (staff: a token, or the admin's session) and Swagger UI for a browser signed in to the
    # admin; its scripts come from our static files (drf-spectacular-sidecar).
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path(
        "schema/ui/",
        staff_member_required(SpectacularSwaggerView.as_view(url_name="api-schema")),
        name="api-schema-ui",
    ),
    path(f"{ESHOP}/orders/", OrderViewSet.as_view({"get": "list"}), name="order-list"),
    path(f"{ESHOP}/orders/<path:code>/", OrderViewSet.as_view({"get": "retrieve"}), name="order-detail"),
    path(f"{ESHOP}/invoices/", InvoiceViewSet.as_view({"get": "list"}), name="invoice-list"),
    path(f"{ESHOP}/invoices/<path:code>/", InvoiceViewSet.as_view({"get": "retrieve"}), name="invoice-detail"),
    path(f"{ESHOP}/jobs/", SyncJobViewSet.as_view({"get": "list"}), name="sync-job-list"),
    path(f"{ESHOP}/sync/", SyncView.as_view(), name="sync"),
]
