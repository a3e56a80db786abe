"""The REST API applies Django's model permissions as the admin does: view to read, change to act."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from rest_framework.authtoken.models import Token

from installations.models import Installation
from sync.models import SyncJob
from tests.api.test_contract import ENDPOINTS, assert_error, call, url
from tests.conftest import PLATFORM_APPS

pytestmark = pytest.mark.django_db

READS = [endpoint for endpoint in ENDPOINTS if endpoint[0] == "get"]
WRITES = [endpoint for endpoint in ENDPOINTS if endpoint[0] != "get"]
NESTED = "/api/v1/installations/{eshop_id}"


def client_of(django_user_model: Any, *codename_prefixes: str) -> Client:
    """A token client of the staff user "operator", holding the platform's permissions whose codename starts
    with one of the prefixes (none without prefixes)."""
    user = django_user_model.objects.create_user("operator", password="unused-password-11", is_staff=True)
    if codename_prefixes:
        granted = Permission.objects.filter(content_type__app_label__in=PLATFORM_APPS)
        user.user_permissions.add(*[p for p in granted if p.codename.startswith(codename_prefixes)])
    return Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")


@pytest.mark.parametrize(("method", "template", "body"), ENDPOINTS)
def test_staff_without_permissions_is_403_everywhere(
    django_user_model: Any, tenants: tuple[Installation, Installation], method: str, template: str, body: Any
) -> None:
    jobs_before = SyncJob.objects.count()

    response = call(client_of(django_user_model), method, url(template), body)

    assert_error(response, 403, "permission_denied")
    assert SyncJob.objects.count() == jobs_before


def test_view_permissions_read_everything_and_start_nothing(
    django_user_model: Any, tenants: tuple[Installation, Installation]
) -> None:
    viewer = client_of(django_user_model, "view_")
    jobs_before = SyncJob.objects.count()

    reads = {template: call(viewer, method, url(template), body).status_code for method, template, body in READS}
    for method, template, body in WRITES:
        assert_error(call(viewer, method, url(template), body), 403, "permission_denied")

    assert reads == {template: 200 for _, template, _ in READS}
    assert SyncJob.objects.count() == jobs_before


@pytest.mark.parametrize("holder", ["permissions", "superuser"])
@pytest.mark.parametrize(("method", "template", "body"), ENDPOINTS)
def test_granting_the_full_set_or_superuser_opens_every_endpoint(
    django_user_model: Any,
    tenants: tuple[Installation, Installation],
    method: str,
    template: str,
    body: Any,
    holder: str,
) -> None:
    client = client_of(django_user_model)
    assert_error(call(client, method, url(template), body), 403, "permission_denied")

    operator = django_user_model.objects.get(username="operator")
    if holder == "superuser":
        operator.is_superuser = True
        operator.save()
    else:
        granted = Permission.objects.filter(content_type__app_label__in=PLATFORM_APPS)
        operator.user_permissions.add(*[p for p in granted if p.codename.startswith(("view_", "change_"))])

    assert call(client, method, url(template), body).status_code == (202 if method == "post" else 200)


@pytest.mark.parametrize(
    ("codename", "allowed"),
    [
        ("view_installation", {"/api/v1/installations/", f"{NESTED}/"}),
        ("view_order", {f"{NESTED}/orders/", f"{NESTED}/orders/{{order}}/"}),
        ("view_invoice", {f"{NESTED}/invoices/", f"{NESTED}/invoices/{{invoice}}/"}),
        ("view_syncjob", {f"{NESTED}/jobs/"}),
        ("view_webhookdelivery", {"/api/v1/webhook-deliveries/"}),
    ],
)
def test_a_read_needs_the_view_permission_of_its_own_model(
    django_user_model: Any, tenants: tuple[Installation, Installation], codename: str, allowed: set[str]
) -> None:
    client = client_of(django_user_model, codename)

    statuses = {template: call(client, method, url(template), body).status_code for method, template, body in READS}

    assert statuses == {template: 200 if template in allowed else 403 for template in statuses}


def test_starting_a_sync_needs_the_installations_change_permission(
    django_user_model: Any, tenants: tuple[Installation, Installation]
) -> None:
    sync = url(f"{NESTED}/sync/")
    body = {"resource": "orders", "mode": "changes"}
    client = client_of(django_user_model, "view_", "change_syncjob")
    assert_error(call(client, "post", sync, body), 403, "permission_denied")

    operator = django_user_model.objects.get(username="operator")
    operator.user_permissions.add(Permission.objects.get(codename="change_installation"))

    assert call(client, "post", sync, body).status_code == 202
