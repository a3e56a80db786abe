"""The addon settings page: Shoptet shows it to e-shop admins inside an iframe of its administration.

Every view proves the admin first (`addon.auth`), then calls one service of
`addon.services` for that admin's installation only.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.cache import patch_cache_control
from django.utils.translation import gettext_lazy as _
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from addon import auth, services
from addon.forms import AddonSettingsForm
from installations import export
from installations.models import Installation
from sync import tasks as sync_tasks

# Shoptet's administration runs on the e-shop's own domain and on these; only they may frame the page.
SHOPTET_ADMIN_ORIGINS = (
    "https://*.myshoptet.com",
    "https://*.shoptet.cz",
    "https://*.shoptet.sk",
    "https://*.shoptet.hu",
)

REFUSALS: dict[auth.Reason, tuple[Any, Any]] = {
    auth.Reason.INCOMPLETE_LINK: (
        _("This link is incomplete"),
        _("Open the addon from your e-shop's administration: Addons, then this addon's settings."),
    ),
    auth.Reason.UNKNOWN_ESHOP: (
        _("This e-shop has not installed the addon"),
        _("Install the addon from Shoptet's addon marketplace, then open its settings again."),
    ),
    auth.Reason.NOT_INSTALLED: (
        _("The addon is not installed in this e-shop"),
        _("It was uninstalled. Install it again from Shoptet's addon marketplace to use it."),
    ),
    auth.Reason.SUSPENDED: (
        _("The addon is suspended for this e-shop"),
        _("Shoptet paused it, usually over an unpaid invoice. Once it is resumed, the settings open again."),
    ),
    auth.Reason.NOT_READY: (
        _("The addon is still being set up"),
        _("Shoptet has not told us everything about your e-shop yet. Try again in a minute."),
    ),
    auth.Reason.INVALID_CODE: (
        _("Shoptet did not confirm who you are"),
        _("The sign-in code is invalid, expired or already used. Open the addon again from your administration."),
    ),
    auth.Reason.FOREIGN_ESHOP: (
        _("You are signed in to a different e-shop"),
        _("Shoptet confirmed you as an admin of another e-shop. Open the addon from this e-shop's administration."),
    ),
    auth.Reason.INVALID_STATE: (
        _("The sign-in could not be completed"),
        _("The sign-in took too long or was already completed. Open the addon again from your administration."),
    ),
    auth.Reason.SESSION_EXPIRED: (
        _("Your session has expired"),
        _("For your safety a session ends after a while. Open the addon again from your administration."),
    ),
    auth.Reason.INVALID_SESSION: (
        _("This link is not valid"),
        _("It was changed or belongs to another e-shop. Open the addon again from your administration."),
    ),
    auth.Reason.INVALID_FORM: (
        _("The form could not be accepted"),
        _("It was not sent from this page. Nothing was changed. Reload the page and try again."),
    ),
    auth.Reason.SHOPTET_UNAVAILABLE: (
        _("Shoptet could not confirm who you are right now"),
        _("Shoptet's sign-in did not answer as expected. Nothing was changed. Try again in a minute."),
    ),
}

ViewFunction = Callable[..., HttpResponse]
ORIGIN = re.compile(r"https?://[a-z0-9.-]+(:[0-9]{1,5})?")


def addon_page(view: ViewFunction) -> ViewFunction:
    """Shown inside Shoptet's iframe: no cookies, no X-Frame-Options, refusals as a page that says why."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with translation.override(_language(request)):
            try:
                return view(request, *args, **kwargs)
            except auth.AccessRefused as refusal:
                return _refused(request, refusal)

    # Forms carry auth.form_token instead of Django's CSRF cookie, which a third-party iframe may lose.
    return csrf_exempt(xframe_options_exempt(wrapper))


@addon_page
@require_GET
def entry(request: HttpRequest) -> HttpResponse:
    """Shoptet's settings URL: `?eshopId=#SHOP_ID#&language=#LANGUAGE#&code=#OAUTH_CODE#`, and the return
    from `authorize` (`?code=…&state=…`)."""
    code, state = request.GET.get("code", ""), request.GET.get("state", "")
    eshop_id = request.GET.get("eshopId", "")
    language = auth.language_of(request.GET.get("language"))
    if state:
        state_eshop_id, language = auth.read_state(state)
        if eshop_id and not auth.names_eshop(eshop_id, state_eshop_id):
            raise auth.AccessRefused(auth.Reason.INVALID_STATE)
        eshop_id = str(state_eshop_id)
    installation = auth.installation_for(eshop_id)
    if not code:
        if state:  # back from `authorize` without a code: the admin declined
            raise auth.AccessRefused(auth.Reason.INVALID_CODE, installation=installation)
        return _protect(HttpResponseRedirect(auth.authorize_url(installation=installation, language=language)), None)
    admin = auth.log_in(installation=installation, code=code, language=language)
    # A redirect, so that reloading the page does not present the spent code again.
    return _protect(HttpResponseRedirect(_page_url("addon-overview", admin)), installation)


@addon_page
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    session = _session(request)
    context = {
        "overview": services.overview(installation=session.installation),
        "page": "overview",
        "started": request.GET.get("started", ""),
    }
    return _render(request, "addon/overview.html", session, context)


@addon_page
@require_GET
def progress(request: HttpRequest) -> HttpResponse:
    """The sync panel alone, polled by htmx while a job runs."""
    session = _session(request)
    data = services.overview(installation=session.installation)
    return _render(request, "addon/_progress.html", session, {"overview": data})


@addon_page
@require_POST
def resync(request: HttpRequest) -> HttpResponse:
    session = _session(request)
    try:
        job = services.start_resync(
            installation=session.installation,
            admin=session.admin,
            resource=request.POST.get("resource", ""),
            mode=request.POST.get("mode", ""),
        )
    except services.ResyncRefused as refusal:
        context = {
            "overview": services.overview(installation=session.installation),
            "page": "overview",
            "message": str(refusal),
        }
        template = "addon/_progress.html" if request.headers.get("HX-Request") else "addon/overview.html"
        return _render(request, template, session, context, status=400)
    sync_tasks.enqueue(job)
    if request.headers.get("HX-Request"):
        data = services.overview(installation=session.installation)
        return _render(request, "addon/_progress.html", session, {"overview": data})
    started = {"started": f"{job.resource}:{job.mode}"}
    return _protect(HttpResponseRedirect(_page_url("addon-overview", session.admin, started)), session.installation)


@addon_page
@require_GET
def deliveries(request: HttpRequest) -> HttpResponse:
    session = _session(request)
    context = {"page": "deliveries", "deliveries": services.recent_deliveries(installation=session.installation)}
    return _render(request, "addon/deliveries.html", session, context)


@addon_page
@require_http_methods(["GET", "POST"])
def preferences(request: HttpRequest) -> HttpResponse:
    session = _session(request)
    current = services.settings_of(installation=session.installation)
    if request.method == "POST":
        form = AddonSettingsForm(request.POST, instance=current)
        if form.is_valid():
            changes = services.update_settings(
                installation=session.installation, admin=session.admin, values=form.cleaned_data
            )
            saved = {"saved": str(len(changes))}
            return _protect(
                HttpResponseRedirect(_page_url("addon-preferences", session.admin, saved)), session.installation
            )
    else:
        form = AddonSettingsForm(instance=current)
    labels = AddonSettingsForm.Meta.labels
    history = services.settings_history(installation=session.installation)
    context = {
        "page": "preferences",
        "form": form,
        "history": [(change, labels.get(change.field, change.field)) for change in history],
        "saved": request.GET.get("saved", ""),
        "export_url": _export_url(session.installation),
    }
    return _render(request, "addon/preferences.html", session, context, status=400 if form.errors else 200)


@require_GET
def export_download(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """The e-shop's data as gzip JSON lines, streamed; the signed link is the credential (no session)."""
    try:
        installation = export.installation_of_link(request.GET.get("s", ""), eshop_id=request.GET.get("eshopId", ""))
    except export.LinkRefused as refusal:
        return HttpResponse(str(refusal), status=refusal.http_status, content_type="text/plain; charset=utf-8")
    response = StreamingHttpResponse(export.gzip_lines(installation), content_type="application/gzip")
    response["Content-Disposition"] = f'attachment; filename="{export.filename(installation)}"'
    patch_cache_control(response, private=True, no_store=True)
    return response


def _export_url(installation: Installation) -> str:
    query = {"eshopId": installation.eshop_id, "s": export.sign_link(installation)}
    return f"{reverse('addon-export')}?{urlencode(query)}"


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _session(request: HttpRequest) -> auth.Session:
    """The proven admin: token in the query (links) or the body (forms), never a cookie."""
    if request.method == "POST":
        # A token in the query string of a post is ignored: forms carry theirs in the body.
        token = request.POST.get("t", "")
    else:
        token = request.GET.get("t", "")
    eshop_ids = request.GET.getlist("eshopId") + request.POST.getlist("eshopId")
    session = auth.authenticate(token=token, eshop_ids=eshop_ids)
    if request.method == "POST":
        auth.check_form(
            session.admin,
            value=request.POST.get("csrf", ""),
            origin=request.headers.get("Origin"),
            own_origin=request.build_absolute_uri("/"),
        )
    return session


def _language(request: HttpRequest) -> str:
    value = request.POST.get("language") if request.method == "POST" else None
    return auth.language_of(value or request.GET.get("language"))


def _page_url(name: str, admin: auth.Admin, extra: dict[str, str] | None = None) -> str:
    query = {"eshopId": admin.eshop_id, "language": admin.language, "t": auth.issue_token(admin), **(extra or {})}
    return f"{reverse(name)}?{urlencode(query)}"


def _render(
    request: HttpRequest,
    template: str,
    session: auth.Session,
    context: dict[str, Any],
    *,
    status: int = 200,
) -> HttpResponse:
    admin = session.admin
    token = auth.issue_token(admin)
    common = {
        "admin": admin,
        "installation": session.installation,
        "language": translation.get_language(),
        "token": token,
        "form_token": auth.form_token(admin),
        "query": urlencode({"eshopId": admin.eshop_id, "language": translation.get_language(), "t": token}),
    }
    with timezone.override(_zone(session.installation)):
        response = render(request, template, {**common, **context}, status=status)
    return _protect(response, session.installation)


def _refused(request: HttpRequest, refusal: auth.AccessRefused) -> HttpResponse:
    title, advice = REFUSALS[refusal.reason]
    context = {"title": title, "advice": advice, "reason": refusal.reason.value, "language": translation.get_language()}
    template = "addon/_refused.html" if request.headers.get("HX-Request") else "addon/refused.html"
    response = render(request, template, context, status=refusal.status)
    return _protect(response, refusal.installation)


def _protect(response: HttpResponse, installation: Installation | None) -> HttpResponse:
    """Framable by Shoptet's administration only; never cached, since pages carry the session token."""
    ancestors = " ".join([*_eshop_origins(installation), *SHOPTET_ADMIN_ORIGINS])
    response["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        f"form-action 'self'; base-uri 'none'; frame-ancestors {ancestors}"
    )
    response["Referrer-Policy"] = "same-origin"
    patch_cache_control(response, no_store=True, private=True)
    return response


def _eshop_origins(installation: Installation | None) -> list[str]:
    if installation is None or not installation.eshop_url:
        return []
    parts = urlsplit(installation.eshop_url)
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    # The URL comes from Shoptet; anything but a plain origin must not reach the header.
    return [origin] if ORIGIN.fullmatch(origin) else []


def _zone(installation: Installation) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(installation.timezone or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")
