"""REST API conventions shared by every endpoint: pagination and one error body (described in config.openapi)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, pagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

API_PREFIX = "/api/"


class Pagination(pagination.PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every error answers `{"error": <code>, "message": <text>, "details": <field errors or null>}`."""
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = "error"
    details = None
    if isinstance(exc, exceptions.ValidationError):
        code = "invalid"
        details = response.data
        message = _first_message(response.data) or "Invalid input."
    else:
        detail = response.data.get("detail") if isinstance(response.data, dict) else response.data
        message = str(detail)
        codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else None
        code = codes if isinstance(codes, str) else _DJANGO_CODES.get(response.status_code, "error")
    response.data = {"error": code, "message": message, "details": details}
    return response


_DJANGO_CODES = {403: "permission_denied", 404: "not_found"}


def _first_message(data: Any) -> str:
    if isinstance(data, dict):
        for field, value in data.items():
            text = _first_message(value)
            if text:
                return text if field == "non_field_errors" else f"{field}: {text}"
    if isinstance(data, list) and data:
        return _first_message(data[0])
    if isinstance(data, str):
        return data
    return ""


# ---------------------------------------------------------------------------
# Errors outside DRF's views: a path under /api/ that matches no route, a crash
# ---------------------------------------------------------------------------


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """config.urls.handler404: the API's error body under /api/, Django's page elsewhere."""
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"error": "not_found", "message": "No such API endpoint.", "details": None}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """config.urls.handler500; never a detail of the crash, which is in the log."""
    if request.path.startswith(API_PREFIX):
        body = {"error": "server_error", "message": "The server failed; the error is logged.", "details": None}
        return JsonResponse(body, status=500)
    return defaults.server_error(request)
