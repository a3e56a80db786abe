"""The OpenAPI description of the REST API (drf-spectacular): every operation documents the one error body
(config.rest) for each status it can answer.

Kept apart from config.rest: DRF imports that module while drf-spectacular is still being imported.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular import openapi
from drf_spectacular.utils import Direction, OpenApiParameter
from rest_framework import serializers

ESHOP_ID = OpenApiParameter(
    "eshop_id", {"type": "integer", "minimum": 1}, OpenApiParameter.PATH, description="Shoptet's e-shop id."
)


class ErrorSerializer(serializers.Serializer):
    """The one error body of the API."""

    error = serializers.CharField(help_text="A stable code: invalid, not_found, not_authenticated, throttled, …")
    message = serializers.CharField(help_text="What went wrong, for a human.")
    details = serializers.JSONField(allow_null=True, help_text="Field errors for `invalid`, else usually null.")


class AutoSchema(openapi.AutoSchema):
    def _get_response_bodies(self, direction: Direction = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        for code in self._error_statuses():
            responses.setdefault(code, self._get_response_for_code(ErrorSerializer, code, direction=direction))
        return responses

    def _error_statuses(self) -> list[str]:
        # 401 without a valid token, 403 for a user who is not staff, 429 when throttled.
        codes = ["401", "403", "429"]
        takes_input = self.method != "GET" or bool(self.get_override_parameters())
        if takes_input:
            codes.append("400")
        # An unknown e-shop or code, or a page past the end.
        if "{" in self.path or self._is_list_view():
            codes.append("404")
        return sorted(codes)
