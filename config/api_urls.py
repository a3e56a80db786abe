"""REST API v1 routes (INTERFACE.md)."""

from __future__ import annotations

from rest_framework.routers import SimpleRouter

from installations.api import InstallationViewSet

router = SimpleRouter()
router.register("installations", InstallationViewSet, basename="installation")

urlpatterns = router.urls
