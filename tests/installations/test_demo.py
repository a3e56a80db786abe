"""Demo mode: the fake Shoptet installs its demo e-shop through the real install callback."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from installations import demo
from installations.models import Installation
from tests.fakes.shoptet import FakeShoptet

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def demo_platform(fake_shoptet: FakeShoptet, live_server, settings) -> FakeShoptet:  # type: ignore[no-untyped-def]
    """The platform served for real, so the fake can call its install URL."""
    settings.PUBLIC_URL = live_server.url
    settings.DEBUG = True
    fake_shoptet.add_eshop(demo.DEMO_ESHOP_ID, orders=3, invoices=2)
    return fake_shoptet


def test_the_command_installs_the_demo_eshop(demo_platform: FakeShoptet) -> None:
    call_command("install_demo_eshop", fake_url=demo_platform.url)

    installation = Installation.objects.get()
    assert installation.eshop_id == demo.DEMO_ESHOP_ID
    assert installation.oauth_token == demo_platform.eshops[demo.DEMO_ESHOP_ID].oauth_token


def test_one_click_in_the_admin_installs_the_demo_eshop(demo_platform: FakeShoptet, admin_client: Client) -> None:
    assert b"Install the demo e-shop" in admin_client.get("/admin/installations/installation/").content

    response = admin_client.post("/admin/installations/installation/install-demo/", follow=True)

    assert response.status_code == 200
    assert b"Demo e-shop installed" in response.content
    assert Installation.objects.get().eshop_id == demo.DEMO_ESHOP_ID


def test_without_a_fake_the_command_says_so(fake_shoptet: FakeShoptet, settings) -> None:  # type: ignore[no-untyped-def]
    settings.DEBUG = True

    with pytest.raises(CommandError, match="does not answer"):
        call_command("install_demo_eshop", fake_url="http://127.0.0.1:9")

    assert not Installation.objects.exists()


def test_outside_demo_mode_there_is_no_demo(settings) -> None:  # type: ignore[no-untyped-def]
    settings.DEBUG = False

    with pytest.raises(CommandError, match="only in demo mode"):
        call_command("install_demo_eshop")
