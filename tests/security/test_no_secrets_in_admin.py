"""No admin page ever shows a secret: every changelist, change page and history page is rendered and searched
for the OAuth tokens, signature keys (current and previous), cached API tokens, REST API keys and result URLs."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.models import DELETION, LogEntry
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token, TokenProxy

from installations import services as installation_services
from installations.models import Installation
from shoptet_api import tokens
from sync.models import SyncJob

pytestmark = pytest.mark.django_db

RESULT_URL = "https://cdn.myshoptet.com/jobs/6f0c2a0e-secret-result-file.json.gz"


@pytest.fixture
def secrets(tenants: tuple[Installation, Installation], admin_user: Any, staff_client: Client) -> list[str]:
    """Every secret the platform holds for both tenants and its staff, each present in the database."""
    mine, theirs = tenants
    installation_services.request_signature_key_renewal(installation=mine)
    installation_services.onboard(installation=Installation.objects.get(pk=mine.pk))  # a new key; the old one kept
    SyncJob.objects.filter(installation=mine, status="failed").update(result_url=RESULT_URL)
    Token.objects.create(user=admin_user)
    values = [settings.SHOPTET_CLIENT_SECRET, settings.SECRET_KEY, *settings.TOKEN_ENCRYPTION_KEYS, RESULT_URL]
    for tenant in Installation.objects.filter(pk__in=[mine.pk, theirs.pk]):
        values += [tenant.oauth_token, tenant.webhook_signature_key]
        values += [tenant.previous_webhook_signature_key] if tenant.previous_webhook_signature_key else []
        cached = tokens.cached_token(tenant)
        assert cached is not None
        values.append(cached.value)
    values += list(Token.objects.values_list("key", flat=True))
    assert Installation.objects.get(pk=mine.pk).previous_webhook_signature_key
    assert all(len(value) >= 8 for value in values)
    return values


def admin_pages() -> list[str]:
    """The index, and for every registered model its list and the change and history pages of its rows."""
    pages = [reverse("admin:index")]
    for model in admin.site._registry:
        opts = model._meta
        pages.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        for row in model._default_manager.all()[:5]:
            object_id = row.user_id if isinstance(row, TokenProxy) else row.pk
            for page in ("change", "history"):
                pages.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_{page}", args=[object_id]))
    return pages


def test_no_admin_page_shows_a_secret(admin_client: Client, secrets: list[str]) -> None:
    # The actions too, and the audit log they leave.
    mine = Installation.objects.order_by("pk")[0]
    admin_client.post(reverse("admin:installations_installation_view_as_eshop", args=[mine.pk]))
    start_sync = admin_client.post(
        reverse("admin:installations_installation_changelist"),
        {"action": "start_sync", "_selected_action": [str(mine.pk)], "index": "0"},
    )
    pages = admin_pages()
    assert len(pages) > 40

    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        html = response.content.decode()
        for secret in secrets:
            assert secret not in html, f"{page} shows a secret"
    for secret in secrets:
        assert secret not in start_sync.content.decode()


def test_api_tokens_are_named_by_their_user_and_revoked_without_showing_the_key(
    admin_client: Client, admin_user: Any, secrets: list[str]
) -> None:
    key = Token.objects.get(user=admin_user).key
    listing = admin_client.get(reverse("admin:authtoken_tokenproxy_changelist"))
    delete_url = reverse("admin:authtoken_tokenproxy_delete", args=[admin_user.pk])
    confirmation = admin_client.get(delete_url)

    revoked = admin_client.post(delete_url, {"post": "yes"})

    assert {str(token) for token in listing.context["cl"].result_list} == {"API token of admin", "API token of staff"}
    assert key not in listing.content.decode() + confirmation.content.decode()
    assert revoked.status_code == 302
    assert not Token.objects.filter(user=admin_user).exists()
    entry = LogEntry.objects.get(action_flag=DELETION)
    assert (entry.object_repr, entry.user) == ("API token of admin", admin_user)
    assert admin_client.get(reverse("admin:authtoken_tokenproxy_add")).status_code == 403
