"""The staff dashboard in a real browser at the widths partner staff use: charts drawn, headers on one line.

Chromium and Playwright as in the settings page's browser test; one full-page screenshot per width goes to the
test run's artifacts folder (dashboard-screenshots/).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from installations.models import Installation
from rollups import services as rollups
from rollups.models import HourlyStat
from tests.addon.test_browser import artifacts_folder, chromium
from tests.rollups.test_dashboard_charts import seed_shops

from playwright.sync_api import Page  # isort: skip (after the browser test's skip checks)

pytestmark = pytest.mark.django_db(transaction=True)

WIDTHS = (1280, 1920)
PASSWORD = "a-long-staff-password"  # a throwaway user of the test database


@pytest.fixture
def artifacts() -> Path:
    return artifacts_folder("dashboard-screenshots")


@pytest.fixture
def staff_browser(live_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Page]:
    """Chromium with a fresh profile, signed in to the admin as a superuser."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    get_user_model().objects.create_superuser("staff", "staff@example.com", PASSWORD)
    with chromium() as context:
        page = context.pages[0] if context.pages else context.new_page()
        page.goto(f"{live_server.url}/admin/login/?next=/admin/")
        page.fill("#id_username", "staff")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url(f"{live_server.url}/admin/")
        yield page


def seed_a_busy_platform() -> None:
    """48 h of figures in every chart, failing e-shops with long names, and a worst one."""
    seed_shops(12)
    for shop in Installation.objects.order_by("pk")[:3]:
        Installation.objects.filter(pk=shop.pk).update(name=f"{shop.name} s.r.o. — velkoobchod a e-shop")
        HourlyStat.objects.filter(series=rollups.FAILURES, label=str(shop.pk)).update(value=5)
    hour = rollups.hour_of(HourlyStat.objects.latest("hour").hour)
    HourlyStat.objects.bulk_create(
        HourlyStat(hour=hour, series=rollups.DELIVERIES, label=status, value=value)
        for status, value in (("failed", 12), ("received", 40))
    )
    HourlyStat.objects.bulk_create(
        HourlyStat(hour=hour - timedelta(hours=back), series=series, label=label, value=value)
        for back in range(0, 48, 3)
        for series, label, value in (
            (rollups.JOBS, "orders/changes/completed", 4),
            (rollups.JOBS, "invoices/snapshot/failed", 1),
            (rollups.JOB_SECONDS, "orders/changes/completed", 12.5),
            (rollups.JOB_SECONDS, "invoices/snapshot/failed", 300),
        )
    )


HEADERS = """() => [...document.querySelectorAll('#charts th, #dashboard th')].map(th => {
    const style = getComputedStyle(th);
    const line = parseFloat(style.lineHeight) || parseFloat(style.fontSize) * 1.4;
    return {text: th.innerText.trim(), height: th.getBoundingClientRect().height, line: line,
            overflows: th.scrollWidth > th.clientWidth + 1};
})"""
CHARTS = """() => [...document.querySelectorAll('svg.chart')].map(svg => {
    const box = svg.getBoundingClientRect();
    return {width: box.width, height: box.height, left: box.left, right: box.right,
            marks: svg.querySelectorAll('path, rect, polyline').length};
})"""


@pytest.mark.parametrize("width", WIDTHS)
def test_the_dashboard_shows_its_charts_and_one_line_headers_at_common_widths(
    staff_browser: Page, artifacts: Path, width: int
) -> None:
    seed_a_busy_platform()
    page = staff_browser
    page.set_viewport_size({"width": width, "height": 1000})
    page.reload()
    page.wait_for_selector("svg.chart")
    page.screenshot(path=str(artifacts / f"dashboard-{width}.png"), full_page=True)

    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth"), "the page scrolls sideways"
    charts = page.evaluate(CHARTS)
    assert len(charts) == 4
    for chart in charts:
        assert chart["right"] <= width
        assert chart["width"] >= 400, f"a chart squeezed to {chart['width']:.0f} px at {width} px"
        assert chart["height"] >= 150
        assert chart["marks"] > 0, "a chart with nothing drawn"
    # The dashboard takes the window's width, not the 600 px column of Django's app index.
    assert max(chart["right"] for chart in charts) >= 0.6 * width
    if width >= 1920:
        assert len({round(chart["left"]) for chart in charts}) >= 2, "the charts stand in one column at 1920 px"
    headers = page.evaluate(HEADERS)
    assert headers, "no table headers found"
    for header in headers:
        # "E-S-H-O-P", one letter per line, is what a too-narrow column used to make of a header.
        assert header["height"] <= 2.5 * header["line"], f"header {header['text']!r} wraps at {width} px"
        assert not header["overflows"], f"header {header['text']!r} is cut off at {width} px"
    assert "velkoobchod" in page.inner_text("#charts")
