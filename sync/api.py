"""REST API v1: an installation's orders, invoices and sync jobs, and starting a sync (INTERFACE.md).

Routes are nested under `installations/{eshop_id}/` (config/api_urls.py). An order or invoice code may
contain `/`: the detail route takes the rest of the path, so `2026%2F000123` and `2026/000123` both work.
`POST …/sync/` answers 202 with the new job, 400 for a bad resource or mode, and 409 when a run of the
same resource and mode is in flight (its job is in `details.job`) or the e-shop is not active.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.openapi import ESHOP_ID, ErrorSerializer
from installations.models import Installation
from sync import jobs, tasks
from sync.models import Invoice, Order, SyncJob

PRICE = {"max_digits": 20, "decimal_places": 2, "coerce_to_string": True, "read_only": True, "allow_null": True}


class OrderSerializer(serializers.ModelSerializer):
    total_with_vat = serializers.DecimalField(**PRICE)  # type: ignore[arg-type]

    class Meta:
        model = Order
        fields = [
            "code",
            "guid",
            "status_id",
            "status_name",
            "currency",
            "total_with_vat",
            "paid",
            "email",
            "creation_time",
            "change_time",
            "item_count",
            "data",
        ]
        read_only_fields = fields


class InvoiceSerializer(serializers.ModelSerializer):
    total_with_vat = serializers.DecimalField(**PRICE)  # type: ignore[arg-type]

    class Meta:
        model = Invoice
        fields = [
            "code",
            "order_code",
            "is_valid",
            "var_symbol",
            "currency",
            "total_with_vat",
            "creation_time",
            "change_time",
            "data",
        ]
        read_only_fields = fields


class SyncJobSerializer(serializers.ModelSerializer):
    shoptet_job_id = serializers.SerializerMethodField()

    class Meta:
        model = SyncJob
        fields = [
            "id",
            "resource",
            "mode",
            "shoptet_job_id",
            "status",
            "created_at",
            "finished_at",
            "imported",
            "error",
        ]
        read_only_fields = fields

    def get_shoptet_job_id(self, job: SyncJob) -> str | None:
        return job.shoptet_job_id or None  # null until Shoptet accepted the job


class SyncRequestSerializer(serializers.Serializer):
    resource = serializers.ChoiceField(choices=SyncJob.Resource.choices)
    mode = serializers.ChoiceField(choices=SyncJob.Mode.choices)


class InstallationScoped:
    """Every query of these views is scoped by the installation in the URL; an unknown e-shop is a 404."""

    kwargs: dict[str, Any]
    _installation: Installation | None = None

    @property
    def installation(self) -> Installation:
        if self._installation is None:
            self._installation = get_object_or_404(Installation, eshop_id=self.kwargs["eshop_id"])
        return self._installation


CODE = OpenApiParameter("code", str, OpenApiParameter.PATH, description="Shoptet's code; may contain `/`.")


@extend_schema_view(
    list=extend_schema(summary="Orders, newest first", parameters=[ESHOP_ID]),
    retrieve=extend_schema(summary="One order", parameters=[ESHOP_ID, CODE]),
)
@extend_schema(tags=["orders"])
class OrderViewSet(InstallationScoped, viewsets.ReadOnlyModelViewSet):
    """Live orders, newest first; `{code}` is the rest of the path."""

    serializer_class = OrderSerializer
    permission_model = Order
    lookup_field = "code"

    def get_queryset(self) -> QuerySet[Order]:
        return Order.objects.filter(installation=self.installation, deleted_at__isnull=True).order_by(
            "-creation_time", "-id"
        )


@extend_schema_view(
    list=extend_schema(summary="Invoices, newest first", parameters=[ESHOP_ID]),
    retrieve=extend_schema(summary="One invoice", parameters=[ESHOP_ID, CODE]),
)
@extend_schema(tags=["invoices"])
class InvoiceViewSet(InstallationScoped, viewsets.ReadOnlyModelViewSet):
    serializer_class = InvoiceSerializer
    permission_model = Invoice
    lookup_field = "code"

    def get_queryset(self) -> QuerySet[Invoice]:
        return Invoice.objects.filter(installation=self.installation, deleted_at__isnull=True).order_by(
            "-creation_time", "-id"
        )


@extend_schema_view(
    list=extend_schema(
        summary="Sync jobs, newest first",
        parameters=[
            ESHOP_ID,
            OpenApiParameter("resource", str, enum=SyncJob.Resource.values),
            OpenApiParameter("mode", str, enum=SyncJob.Mode.values),
            OpenApiParameter("status", str, enum=SyncJob.Status.values),
        ],
    ),
)
@extend_schema(tags=["sync jobs"])
class SyncJobViewSet(InstallationScoped, viewsets.ReadOnlyModelViewSet):
    """Sync jobs, newest first; `?resource=`, `?mode=` and `?status=` filter."""

    serializer_class = SyncJobSerializer
    permission_model = SyncJob

    def get_queryset(self) -> QuerySet[SyncJob]:
        queryset = SyncJob.objects.filter(installation=self.installation)
        for name, choices in (
            ("resource", SyncJob.Resource.values),
            ("mode", SyncJob.Mode.values),
            ("status", SyncJob.Status.values),
        ):
            value = self.request.query_params.get(name)
            if value:
                if value not in choices:
                    raise serializers.ValidationError({name: f"must be one of {', '.join(choices)}"})
                queryset = queryset.filter(**{name: value})
        return queryset.order_by("-created_at", "-id")


class SyncView(InstallationScoped, APIView):
    """`POST {"resource": "orders"|"invoices", "mode": "snapshot"|"changes"}` starts a sync run."""

    # Starting a sync changes the installation's mirror: the admin asks the same for its *Start a sync*.
    permission_model = Installation

    @extend_schema(
        summary="Start a sync",
        tags=["sync jobs"],
        parameters=[ESHOP_ID],
        request=SyncRequestSerializer,
        responses={202: SyncJobSerializer, 409: ErrorSerializer},
    )
    def post(self, request: Request, eshop_id: int) -> Response:
        wanted = SyncRequestSerializer(data=request.data)
        wanted.is_valid(raise_exception=True)
        try:
            job = jobs.request_sync(
                installation=self.installation,
                resource=wanted.validated_data["resource"],
                mode=wanted.validated_data["mode"],
                cause=f"REST API ({request.user})",
            )
        except jobs.SyncRunning as running:
            body = {
                "error": "sync_running",
                "message": f"A {running.job.mode} of {running.job.resource} is already {running.job.status}.",
                "details": {"job": SyncJobSerializer(running.job).data},
            }
            return Response(body, status=status.HTTP_409_CONFLICT)
        except jobs.SyncError as error:
            return Response(
                {"error": "conflict", "message": str(error), "details": None}, status=status.HTTP_409_CONFLICT
            )
        tasks.enqueue(job)
        return Response(SyncJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)
