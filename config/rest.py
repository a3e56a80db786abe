"""REST API conventions shared by every endpoint: pagination, permissions, the JSON parser and one error body
(described in config.openapi)."""

from __future__ import annotations

import json
import re
from typing import IO, TYPE_CHECKING, Any

from django.core.exceptions import RequestDataTooBig
from django.db.models import Model
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import authentication, exceptions, pagination, parsers, permissions
from rest_framework.request import Request
from rest_framework.response import Response

if TYPE_CHECKING:
    # rest_framework.views reads DEFAULT_PERMISSION_CLASSES (this module) while it is being imported.
    from rest_framework.views import APIView

API_PREFIX = "/api/"


class Pagination(pagination.PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token auth; a key that is not one of its 40 hex digits is refused before it reaches the database
    (which refuses a NUL in a query outright)."""

    KEY_SHAPE = re.compile(r"[0-9a-f]{40}")

    def authenticate_credentials(self, key: str) -> Any:
        if not self.KEY_SHAPE.fullmatch(key):
            raise exceptions.AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(key)


class ModelPermissions(permissions.BasePermission):
    """Django's model permissions, as the admin applies them: `view` to read, `change` to act.

    Each view names the model in `permission_model` (for an action, the model it changes: starting a sync
    needs the installation's change permission, as the admin's *Start a sync* does). Superusers hold every
    permission; a view without a model is refused to everyone else.
    """

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active and user.is_staff):
            return False
        model: type[Model] | None = getattr(view, "permission_model", None)
        if model is None:
            return bool(user.is_superuser)
        action = "view" if request.method in permissions.SAFE_METHODS else "change"
        return bool(user.has_perm(f"{model._meta.app_label}.{action}_{model._meta.model_name}"))


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing with a 400 what it would crash on or what could not be written back out."""

    def parse(self, stream: IO[Any], media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError as error:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from error
        try:
            # An escaped lone surrogate (`"\ud800"`) parses, but no error message quoting it can be encoded.
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as error:
            raise exceptions.ParseError("JSON parse error - a string holds a lone surrogate.") from error
        return data


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every error answers `{"error": <code>, "message": <text>, "details": <field errors or null>}`."""
    if isinstance(exc, RequestDataTooBig):
        # Django's own answer to it is an HTML 400; the client needs to know it was the size.
        body = {"error": "too_large", "message": "The request body is too large.", "details": None}
        return Response(body, status=413)
    from rest_framework.views import exception_handler as drf_exception_handler  # see the import of APIView

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
