"""REST API v1: the webhook delivery log (INTERFACE.md)."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, viewsets
from rest_framework.exceptions import NotFound

from installations.models import Installation
from shoptet_api.ids import InvalidEshopId, parse_eshop_id
from webhooks.models import WebhookDelivery


class WebhookDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "eshop_id",
            "event",
            "event_instance",
            "event_created",
            "received_at",
            "signature_valid",
            "status",
            "attempts",
            "error",
            "body_length",
            "body_sha256",
            "body_truncated",
        ]
        read_only_fields = fields


@extend_schema_view(
    list=extend_schema(
        summary="The webhook delivery log, newest first",
        parameters=[
            OpenApiParameter("eshop_id", {"type": "integer", "minimum": 1}, description="Only this e-shop's."),
            OpenApiParameter("event", {"type": "string", "maxLength": 64}, description="Only this event."),
            OpenApiParameter("status", str, enum=WebhookDelivery.Status.values),
        ],
    ),
)
@extend_schema(tags=["webhook deliveries"])
class WebhookDeliveryViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """`?eshop_id=&event=&status=`, newest first."""

    serializer_class = WebhookDeliverySerializer
    permission_model = WebhookDelivery

    def get_queryset(self) -> QuerySet[WebhookDelivery]:
        params = self.request.query_params
        queryset = WebhookDelivery.objects.all()
        eshop_id = params.get("eshop_id")
        if eshop_id:
            try:
                parsed = parse_eshop_id(eshop_id)
            except InvalidEshopId as error:
                raise serializers.ValidationError({"eshop_id": "must be a numeric e-shop id"}) from error
            if not Installation.objects.filter(eshop_id=parsed).exists():
                raise NotFound("No installation with this eshop_id.")
            queryset = queryset.filter(eshop_id=parsed)
        event = params.get("event")
        if event:
            if len(event) > 64 or "\x00" in event:
                raise serializers.ValidationError({"event": "must be an event name"})
            queryset = queryset.filter(event=event)
        status = params.get("status")
        if status:
            if status not in WebhookDelivery.Status.values:
                raise serializers.ValidationError(
                    {"status": f"must be one of {', '.join(WebhookDelivery.Status.values)}"}
                )
            queryset = queryset.filter(status=status)
        return queryset.order_by("-received_at", "-id")
