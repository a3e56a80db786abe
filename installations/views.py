"""Install callback: Shoptet calls it with a one-time code and gives us 5 seconds."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from config.addresses import client_address
from installations import services, throttle


@csrf_exempt  # Shoptet's server calls it; there is no browser session to protect.
@require_GET
def install(request: HttpRequest) -> HttpResponse:
    """Answer 200 only once the OAuth token is committed; onboarding follows through the relay."""
    remote_addr = client_address(request.META)
    throttled = throttle.admit_install_callback(remote_addr=remote_addr)
    if throttled:
        body = {"installed": False, "error": "Too many install requests; retry later."}
        return JsonResponse(body, status=429, headers={"Retry-After": str(throttled.retry_after)})
    try:
        outcome = services.install(code=request.GET.get("code", ""), remote_addr=remote_addr)
    except services.InstallFailed as failure:
        return JsonResponse({"installed": False, "error": failure.message}, status=failure.http_status)
    return JsonResponse(
        {"installed": True, "eshopId": outcome.installation.eshop_id, "reinstalled": outcome.reinstalled}
    )
