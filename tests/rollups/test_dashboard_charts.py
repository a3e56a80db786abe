"""The dashboard's charts: drawn from the hourly statistics, in the same number of queries for 2 or 1,000 e-shops."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from installations.models import Installation
from rollups import services
from rollups.models import HourlyStat

pytestmark = pytest.mark.django_db


def seed_shops(count: int) -> None:
    first = 700_000 + Installation.objects.count() * 10
    shops = Installation.objects.bulk_create(
        Installation(eshop_id=first + number, name=f"Shop {number}") for number in range(count)
    )
    hour = services.hour_of(timezone.now())
    HourlyStat.objects.bulk_create(
        HourlyStat(hour=hour - timedelta(hours=number % 48), series=services.FAILURES, label=str(shop.pk), value=1)
        for number, shop in enumerate(shops)
    )
    HourlyStat.objects.bulk_create(
        HourlyStat(hour=hour - timedelta(hours=back), series=series, label=label, value=back + 1)
        for back in range(48)
        for series, label in ((services.DELIVERIES, "processed"), (services.LATENCY, "2"), (services.API_CALLS, ""))
        if not HourlyStat.objects.filter(series=series, hour=hour - timedelta(hours=back), label=label).exists()
    )


def test_the_charts_and_the_most_failing_shops_are_shown(admin_client: Client) -> None:
    seed_shops(2)
    worst = Installation.objects.order_by("pk").last()
    assert worst is not None
    HourlyStat.objects.filter(series=services.FAILURES, label=str(worst.pk)).update(value=7)

    response = admin_client.get("/admin/")

    html = response.content.decode()
    assert html.count('<svg class="chart"') == 4
    assert '<title id="chart-deliveries">Deliveries</title>' in html
    shops = response.context["failing_shops"]
    assert (shops[0].installation, shops[0].failures) == (worst, 7)
    assert f"/admin/installations/installation/{worst.pk}/change/" in html


def test_the_dashboard_takes_the_same_queries_for_two_or_a_thousand_eshops(
    admin_client: Client, django_assert_max_num_queries
) -> None:
    seed_shops(2)
    admin_client.get("/admin/")  # sessions and content types cached
    with django_assert_max_num_queries(20) as few:
        admin_client.get("/admin/")
    seed_shops(998)

    with django_assert_max_num_queries(len(few.captured_queries)):
        response = admin_client.get("/admin/")

    assert len(response.context["failing_shops"]) == 10
