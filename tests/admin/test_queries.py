"""No query per row: every changelist takes the same number of queries for two tenants as for four, and none
reads a whole table for its filters."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.authtoken.models import Token

from config import admin as platform_admin
from installations import services as installation_services
from installations.models import AddonSettings, Installation, SettingsChange
from sync.models import Order
from tests.api.conftest import SLASHED, add_deliveries, add_jobs, mirror
from tests.conftest import install_via_fake
from tests.fakes.shoptet import FakeShoptet
from webhooks.models import RegistrationDrift, WebhookDelivery

pytestmark = pytest.mark.django_db

MOST_QUERIES = 15


def add_everything_else(installation: Installation, user: Any, number: int) -> None:
    """A row for each admin list that the tenants' fixture does not fill."""
    AddonSettings.objects.create(installation=installation, notification_email=f"ops{number}@example.com")
    SettingsChange.objects.create(installation=installation, field="sync_orders", admin_email=f"a{number}@example.com")
    RegistrationDrift.objects.create(installation=installation, missing=["order:create"])
    LogEntry.objects.log_actions(user_id=user.pk, queryset=[installation], action_flag=CHANGE, change_message="x")
    staff = type(user).objects.create_user(f"staff{number}", password="unused-password-10", is_staff=True)
    Token.objects.create(user=staff)
    Group.objects.create(name=f"group {number}")
    AccessAttempt.objects.create(username=f"staff{number}", ip_address="192.0.2.1", failures_since_start=1)
    AccessLog.objects.create(username=f"staff{number}", ip_address="192.0.2.1")
    AccessFailureLog.objects.create(username=f"staff{number}", ip_address="192.0.2.1")


def changelists() -> list[str]:
    return [reverse("admin:index")] + [
        reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist") for model in admin.site._registry
    ]


def query_counts(client: Client) -> dict[str, int]:
    counts = {}
    for url in changelists():
        client.get(url)  # warm the session and content type caches
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        assert response.status_code == 200, url
        counts[url] = len(queries.captured_queries)
    return counts


def test_every_changelist_takes_the_same_queries_for_more_rows(
    admin_client: Client, admin_user: Any, tenants: tuple[Installation, Installation], fake_shoptet: FakeShoptet
) -> None:
    for number, tenant in enumerate(tenants):
        add_everything_else(tenant, admin_user, number)
    two_tenants = query_counts(admin_client)

    for number, eshop_id in enumerate((400001, 400002), start=2):
        tenant = install_via_fake(fake_shoptet, eshop_id, orders=4, invoices=3)
        installation_services.onboard(installation=tenant)
        fake_shoptet.create_order(eshop_id, code=SLASHED, webhook=False)
        mirror(fake_shoptet, tenant)
        add_jobs(tenant)
        add_deliveries(tenant)
        add_everything_else(tenant, admin_user, number)
    four_tenants = query_counts(admin_client)

    assert four_tenants == two_tenants
    assert max(four_tenants.values()) <= MOST_QUERIES, four_tenants


@pytest.mark.parametrize(
    "url",
    [
        "/admin/installations/installation/",
        "/admin/webhooks/webhookdelivery/",
        "/admin/sync/order/",
        "/admin/sync/invoice/",
        "/admin/sync/syncjob/",
    ],
)
def test_the_busiest_lists_stay_within_a_few_queries(
    admin_client: Client, tenants: tuple[Installation, Installation], django_assert_max_num_queries, url: str
) -> None:
    admin_client.get(url)

    with django_assert_max_num_queries(MOST_QUERIES):
        response = admin_client.get(url)

    assert len(response.context["cl"].result_list) >= 2


INSTALLATION_FILTERED_LISTS = [
    "/admin/webhooks/webhookdelivery/",
    "/admin/sync/order/",
    "/admin/sync/invoice/",
    "/admin/sync/syncjob/",
]


@pytest.mark.parametrize("url", INSTALLATION_FILTERED_LISTS)
def test_lists_filtered_by_eshop_never_list_every_eshop(
    admin_client: Client, tenants: tuple[Installation, Installation], url: str
) -> None:
    mine, theirs = tenants

    page = admin_client.get(url).content.decode()
    sidebar = page[page.index('id="changelist-filter"') :]
    sidebar = sidebar[: sidebar.index("</nav>")]
    filtered = admin_client.get(url, {"eshop": str(mine.eshop_id)})
    mistyped = admin_client.get(url, {"eshop": "12x"})

    # An e-shop id box instead of a sidebar line per e-shop: no e-shop's name is in the filters.
    assert 'name="eshop"' in sidebar
    assert str(theirs) not in sidebar and str(mine) not in sidebar
    assert filtered.status_code == 200
    rows = filtered.context["cl"].result_list
    assert rows and {row.installation_id for row in rows} == {mine.pk}
    assert mistyped.status_code == 200 and list(mistyped.context["cl"].result_list) == []


def test_an_unfiltered_large_list_is_counted_from_the_planners_estimate(
    admin_client: Client, tenants: tuple[Installation, Installation]
) -> None:

    with connection.cursor() as cursor:  # the statistics as PostgreSQL keeps them for a table of a million rows
        cursor.execute("ANALYZE webhooks_webhookdelivery")
        cursor.execute("UPDATE pg_class SET reltuples = 1000000 WHERE oid = 'webhooks_webhookdelivery'::regclass")

    unfiltered = admin_client.get("/admin/webhooks/webhookdelivery/")
    filtered = admin_client.get("/admin/webhooks/webhookdelivery/", {"eshop": str(tenants[0].eshop_id)})

    assert platform_admin.ESTIMATE_COUNTS_ABOVE < 1_000_000
    assert unfiltered.context["cl"].paginator.count == 1_000_000
    exact = WebhookDelivery.objects.filter(installation=tenants[0]).count()
    assert filtered.context["cl"].paginator.count == exact


def test_no_list_reads_a_table_for_its_filters_or_dates(
    admin_client: Client, tenants: tuple[Installation, Installation]
) -> None:
    # The platform's own lists; django-axes' login records and Django's users and groups stay small.
    for url in [url for url in changelists() if not url.startswith(("/admin/axes/", "/admin/auth/"))]:
        admin_client.get(url)
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(url).status_code == 200
        # Django's filters of the values in use and its date hierarchy are a DISTINCT over the whole table.
        assert not [q["sql"] for q in queries.captured_queries if "DISTINCT" in q["sql"].upper()], url


def test_typed_filters_find_exact_values_and_say_when_a_count_was_capped(
    admin_client: Client, tenants: tuple[Installation, Installation], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(platform_admin, "COUNT_FILTERED_UP_TO", 2)
    currency, _ = Counter(Order.objects.values_list("currency", flat=True)).most_common(1)[0]

    lowercase = admin_client.get("/admin/sync/order/", {"currency": currency.lower()})
    unknown = admin_client.get("/admin/sync/order/", {"currency": "XXX"})
    too_long = admin_client.get("/admin/sync/order/", {"status_name": "x" * 300})
    cash = admin_client.get("/admin/sync/invoice/", {"billing_method_id": "3"})
    bogus = admin_client.get("/admin/sync/invoice/", {"billing_method_id": "7"})

    assert {row.currency for row in lowercase.context["cl"].result_list} == {currency}
    assert Order.objects.filter(currency=currency).count() > 2
    assert "More than 2 orders" in " ".join(lowercase.content.decode().split())
    assert list(unknown.context["cl"].result_list) == []
    assert too_long.status_code == 200 and list(too_long.context["cl"].result_list) == []
    assert {row.billing_method_id for row in cash.context["cl"].result_list} <= {3}
    assert bogus.status_code == 200 and list(bogus.context["cl"].result_list) == []  # no such method
