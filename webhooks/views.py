"""The webhook endpoint: store, answer. Nothing here calls Shoptet or the broker."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from webhooks import services


@csrf_exempt  # Shoptet's server calls it; the signature is the authentication.
@require_POST
def receive(request: HttpRequest) -> HttpResponse:
    intake = services.record_delivery(
        body=_body_or_none(request), headers=request.headers, remote_addr=request.META.get("REMOTE_ADDR")
    )
    answer: dict[str, object] = {"delivery": intake.delivery.pk, "status": intake.delivery.status}
    if intake.message:
        answer["message"] = intake.message
    return JsonResponse(answer, status=intake.http_status)


def _body_or_none(request: HttpRequest) -> bytes | None:
    """The raw body, or None when it is over the cap (read no further than one byte past it)."""
    limit = settings.WEBHOOK_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return None
    body = request.read(limit + 1)
    return None if len(body) > limit else body
