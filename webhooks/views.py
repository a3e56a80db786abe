"""The webhook endpoint: store, answer. Nothing here calls Shoptet or the broker."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from config.addresses import client_address
from webhooks import intake


@csrf_exempt  # Shoptet's server calls it; the signature is the authentication.
@require_POST
def receive(request: HttpRequest) -> HttpResponse:
    stored = intake.record_delivery(
        body=_body_or_none(request), headers=request.headers, remote_addr=client_address(request.META)
    )
    if stored.delivery is None:
        response = JsonResponse({"delivery": None, "status": "rate_limited", "message": stored.message}, status=429)
        response["Retry-After"] = str(stored.retry_after)
        return response
    answer: dict[str, object] = {"delivery": stored.delivery.pk, "status": stored.delivery.status}
    if stored.message:
        answer["message"] = stored.message
    return JsonResponse(answer, status=stored.http_status)


def _body_or_none(request: HttpRequest) -> bytes | None:
    """The raw body, or None when it is over the cap (read no further than one byte past it)."""
    limit = settings.WEBHOOK_MAX_BODY_BYTES
    declared = _declared_length(request)
    if declared is None:
        body = _unframed_body(request, limit + 1)
    elif declared > limit:
        return None
    else:
        body = request.read(limit + 1)
    return None if len(body) > limit else body


def _declared_length(request: HttpRequest) -> int | None:
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    return declared if declared >= 0 else None


def _unframed_body(request: HttpRequest, size: int) -> bytes:
    """A body without Content-Length (chunked): Django reads it as empty, so read the server's stream itself.

    Only a server that ends the stream with the body (gunicorn decodes the chunks and says so in
    `wsgi.input_terminated`) can be read this way; from any other, reading would wait for the client to hang up.
    """
    if not request.META.get("wsgi.input_terminated"):
        return b""
    stream = request.META["wsgi.input"]
    chunks = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
