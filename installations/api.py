"""REST API v1: installations (INTERFACE.md)."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, viewsets

from config.openapi import ESHOP_ID
from installations.models import Installation
from webhooks.models import WebhookRegistration


class InstallationSerializer(serializers.ModelSerializer):
    webhooks_registered = serializers.SerializerMethodField()

    class Meta:
        model = Installation
        fields = [
            "eshop_id",
            "eshop_url",
            "name",
            "contact_email",
            "status",
            "installed_at",
            "uninstalled_at",
            "webhooks_registered",
            "last_webhook_at",
        ]
        read_only_fields = fields

    def get_webhooks_registered(self, installation: Installation) -> list[str]:
        return [registration.event for registration in installation.webhook_registrations.all()]


@extend_schema_view(
    list=extend_schema(
        summary="Installations",
        parameters=[
            OpenApiParameter("status", str, enum=Installation.Status.values, description="Only installations in it.")
        ],
    ),
    retrieve=extend_schema(summary="One installation", parameters=[ESHOP_ID]),
)
@extend_schema(tags=["installations"])
class InstallationViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = InstallationSerializer
    permission_model = Installation
    lookup_field = "eshop_id"
    lookup_value_regex = r"[0-9]+"

    def get_queryset(self) -> QuerySet[Installation]:
        registrations = WebhookRegistration.objects.order_by("event")
        queryset = Installation.objects.prefetch_related(Prefetch("webhook_registrations", queryset=registrations))
        status = self.request.query_params.get("status")
        if status:
            if status not in Installation.Status.values:
                raise serializers.ValidationError({"status": f"must be one of {', '.join(Installation.Status.values)}"})
            queryset = queryset.filter(status=status)
        return queryset.order_by("eshop_id")
