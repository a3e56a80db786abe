"""The settings page in a real browser, inside an iframe of a page served from another site, as Shoptet shows it.

Chromium is Debian's (`apt-get install chromium`), driven by Playwright from PyPI; `make test` installs both.
One screenshot per page and language goes to the test run's artifacts folder.
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.db import connections
from kombu import pools

from config.celery import app as celery_app
from installations import services
from installations.models import AddonSettings, Installation, SettingsChange
from sync import snapshots as sync_snapshots
from sync.models import Order, SyncJob
from tests.conftest import ESHOP_ID, install_via_fake
from tests.fakes.shoptet import FakeShoptet
from webhooks.models import WebhookDelivery

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000

# `make test` installs both and exports the artifacts folder: there a missing browser fails the run.
# Elsewhere the test is skipped with the command that installs what it needs.
if not os.environ.get("TEST_ARTIFACTS_DIR"):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium", allow_module_level=True)
    pytest.importorskip("playwright.sync_api", reason="pip install -r requirements-dev.txt")
from playwright.sync_api import BrowserContext, ConsoleMessage, FrameLocator, Page, expect, sync_playwright  # noqa: E402

ADMIN_PAGE = """<!doctype html>
<html lang="{language}">
<head><meta charset="utf-8"><title>Shoptet administration</title>
<style>
  body {{ margin: 0; display: flex; min-height: 100vh; font-family: sans-serif; background: #eef1f5; }}
  nav {{ width: 200px; background: #1d2b3a; color: #fff; padding: 16px; }}
  nav b {{ display: block; margin-bottom: 24px; font-size: 20px; }}
  nav span {{ display: block; padding: 6px 0; color: #c9d3de; }}
  main {{ flex: 1; padding: 16px; }}
  iframe {{ width: 100%; height: 1500px; border: 1px solid #d0d6de; background: #fff; }}
</style></head>
<body>
  <nav><b>Shoptet</b><span>Orders</span><span>Customers</span><span>Addons</span></nav>
  <main><iframe id="addon" title="Addon settings" src="{src}"></iframe></main>
</body></html>"""


class AdminHandler(BaseHTTPRequestHandler):
    """Plays the e-shop's administration: one page that frames the addon settings URL."""

    page = ""

    def do_GET(self) -> None:
        body = self.page.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def admin_site() -> Iterator[str]:
    """Another site than the platform's: `localhost` while the platform is `127.0.0.1`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), AdminHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://localhost:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def artifacts_folder(name: str) -> Path:
    """A folder of the test run's artifacts (kept by `make test`), created if missing."""
    root = Path(os.environ.get("TEST_ARTIFACTS_DIR") or settings.BASE_DIR / "var" / "test-artifacts")
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def artifacts() -> Path:
    return artifacts_folder("addon-settings-screenshots")


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """What the page enqueues runs at once in the platform's thread, as a worker would run it."""
    # An eager task still passes through a broker producer. A test that switched Celery's broker and back
    # can leave closed pools in kombu's process-wide registry (this test runs late, with the transactional
    # ones), so start from fresh pools, as a forked worker does.
    pools.reset()
    celery_app._after_fork()  # type: ignore[attr-defined]
    saved = (celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates)
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = saved


@pytest.fixture
def platform(live_server: Any, fake_shoptet: FakeShoptet, settings: Any, admin_site: str) -> Installation:
    """The platform on loopback with one onboarded e-shop whose administration is `admin_site`."""
    settings.PUBLIC_URL = live_server.url
    installation = install_via_fake(fake_shoptet, ESHOP_ID, orders=5, invoices=3)
    services.onboard(installation=installation)
    # The e-shop's administration runs on its own domain; here that is the admin site.
    Installation.objects.filter(pk=installation.pk).update(eshop_url=f"{admin_site}/")
    return Installation.objects.get(pk=installation.pk)


@pytest.fixture
def console_errors() -> list[str]:
    return []


@pytest.fixture
def browser_page(console_errors: list[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Page]:
    """Debian's Chromium with a fresh profile; the whole flow must run without a single cookie."""
    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls stay synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    def remember(message: ConsoleMessage) -> None:
        if message.type == "error":
            console_errors.append(message.text)

    with chromium(viewport={"width": 1280, "height": 1100}) as context:
        page = context.pages[0] if context.pages else context.new_page()
        page.on("console", remember)
        yield page
        assert context.cookies() == []


@contextmanager
def chromium(**options: Any) -> Iterator[BrowserContext]:
    """Debian's Chromium with a fresh profile, removed at the end."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, **options
            )
            context.set_default_timeout(TIMEOUT_MS)
            try:
                yield context
            finally:
                # While Playwright's event loop runs in this thread, Django keeps the test's ORM calls on a
                # connection of their own; close it here, or the test database cannot be dropped at the end.
                connections.close_all()
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def open_in_admin(page: Page, admin_site: str, src: str, language: str) -> FrameLocator:
    AdminHandler.page = ADMIN_PAGE.format(language=language, src=html.escape(src))
    page.goto(f"{admin_site}/admin/addon/")
    return page.frame_locator("#addon")


def shoot(page: Page, artifacts: Path, name: str) -> None:
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)
    assert (artifacts / f"{name}.png").stat().st_size > 10_000


def addon_frame_url(page: Page) -> str:
    frame = page.locator("#addon").element_handle().content_frame()
    assert frame is not None
    return frame.url


def test_the_settings_page_works_inside_shoptets_iframe_in_czech_and_english(
    platform: Installation,
    fake_shoptet: FakeShoptet,
    live_server: Any,
    admin_site: str,
    browser_page: Page,
    console_errors: list[str],
    artifacts: Path,
    eager_tasks: None,
) -> None:
    page = browser_page
    fake_shoptet.never_finish_jobs = True
    fake_shoptet.create_order(platform.eshop_id)  # Shoptet notifies the platform for real
    fake_shoptet.update_order(platform.eshop_id, next(iter(fake_shoptet.eshops[platform.eshop_id].orders)), paid=True)
    assert WebhookDelivery.objects.filter(installation=platform).count() >= 2

    # -- Czech: the simplified flow, `#OAUTH_CODE#` filled in by Shoptet ---------------------------------------
    code = fake_shoptet.issue_admin_code(platform.eshop_id, email="jana@eshop.example", name="Jana Nováková")
    query = urlencode({"eshopId": str(platform.eshop_id), "language": "cs", "code": code})
    frame = open_in_admin(page, admin_site, f"{live_server.url}/addon/settings/?{query}", "cs")

    expect(frame.locator("h1")).to_have_text("Přehled")
    expect(frame.locator(".topbar__user")).to_contain_text("jana@eshop.example")
    assert "/addon/settings/overview/?eshopId=222651&language=cs&t=" in addon_frame_url(page)
    shoot(page, artifacts, "cs-overview")

    # Resync: the panel updates in place while the job moves on, without reloading the page.
    frame.locator("body").evaluate("() => { window.stillTheSamePage = true; }")
    frame.locator('tr[data-resource="orders"] button[value="snapshot"]').click()
    expect(frame.locator('tr[data-resource="orders"] .job-state')).to_contain_text("Shoptet připravuje data")
    job = SyncJob.objects.get(installation=platform)
    fake_shoptet.finish_job(platform.eshop_id, str(job.shoptet_job_id))
    sync_snapshots.import_snapshot(job=job)
    expect(frame.locator('tr[data-resource="orders"] .job-state')).to_contain_text("Nic neběží")
    expect(frame.locator('tr[data-resource="orders"] td.num')).to_have_text("6")
    assert Order.objects.filter(installation=platform).count() == 6
    assert frame.locator("body").evaluate("() => window.stillTheSamePage") is True
    shoot(page, artifacts, "cs-overview-after-resync")

    frame.get_by_role("link", name="Oznámení ze Shoptetu").click()
    expect(frame.locator("h1")).to_have_text("Oznámení ze Shoptetu")
    expect(frame.locator("tbody tr")).to_have_count(WebhookDelivery.objects.filter(installation=platform).count())
    expect(frame.locator("tbody")).to_contain_text("Objednávka vytvořena")
    shoot(page, artifacts, "cs-deliveries")

    frame.get_by_role("link", name="Nastavení").click()
    expect(frame.locator("h1")).to_have_text("Nastavení")
    frame.get_by_label("Synchronizovat faktury").uncheck()
    frame.get_by_label("E-mail pro upozornění").fill("upozorneni@eshop.example")
    frame.get_by_role("button", name="Uložit nastavení").click()
    expect(frame.locator(".notice--success")).to_have_text("Nastavení bylo uloženo.")
    expect(frame.locator("tbody tr")).to_have_count(2)
    shoot(page, artifacts, "cs-settings")
    stored = AddonSettings.objects.get(installation=platform)
    assert (stored.sync_invoices, stored.notification_email) == (False, "upozorneni@eshop.example")
    assert list(SettingsChange.objects.order_by("pk").values_list("field", "admin_email")) == [
        ("sync_invoices", "jana@eshop.example"),
        ("notification_email", "jana@eshop.example"),
    ]

    # Changing the e-shop in the address is refused, and the refusal is readable inside the frame.
    tampered = addon_frame_url(page).replace("eshopId=222651", "eshopId=315185")
    open_in_admin(page, admin_site, tampered, "cs")
    expect(page.frame_locator("#addon").locator("h1")).to_have_text("Tento odkaz není platný")
    shoot(page, artifacts, "cs-refused")

    # -- English: the full flow, redirected to the e-shop's `authorize` and back ------------------------------
    query = urlencode({"eshopId": str(platform.eshop_id), "language": "en"})
    frame = open_in_admin(page, admin_site, f"{live_server.url}/addon/settings/?{query}", "en")

    expect(frame.locator("h1")).to_have_text("Overview")
    expect(frame.locator(".topbar__user")).to_contain_text(platform.contact_email)
    assert fake_shoptet.request_count("GET", rf"^/eshops/{platform.eshop_id}/action/OAuthServer/authorize$") == 1
    expect(frame.locator('tr[data-resource="orders"] td.num')).to_have_text("6")
    expect(frame.locator('tr[data-resource="invoices"] th')).to_contain_text("switched off")
    shoot(page, artifacts, "en-overview")

    frame.get_by_role("link", name="Notifications from Shoptet").click()
    expect(frame.locator("h1")).to_have_text("Notifications from Shoptet")
    expect(frame.locator("tbody")).to_contain_text("Order created")
    shoot(page, artifacts, "en-deliveries")

    frame.get_by_role("link", name="Settings").click()
    expect(frame.locator("h1")).to_have_text("Settings")
    frame.get_by_label("Notification e-mail").fill("not an address")
    frame.get_by_role("button", name="Save settings").click()
    expect(frame.locator(".field__error")).to_have_text("Enter a valid email address.")
    shoot(page, artifacts, "en-settings")
    assert AddonSettings.objects.get(installation=platform).notification_email == "upozorneni@eshop.example"

    replayed = f"{live_server.url}/addon/settings/?" + urlencode(
        {"eshopId": str(platform.eshop_id), "language": "en", "code": code}
    )
    frame = open_in_admin(page, admin_site, replayed, "en")
    expect(frame.locator("h1")).to_have_text("Shoptet did not confirm who you are")
    shoot(page, artifacts, "en-refused")

    # Only the refusals provoked above may show up (as failed loads); no script error, no CSP violation.
    provoked = "Failed to load resource: the server responded with a status of"
    assert [error for error in console_errors if not error.startswith(provoked)] == []
