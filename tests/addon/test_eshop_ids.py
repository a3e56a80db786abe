"""`eshopId` on the settings page: ASCII digits only, so Unicode digits never name e-shop 1000001."""

from __future__ import annotations

import pytest
from django.test import Client

from installations import services
from installations.models import AddonSettings, Installation, SettingsChange
from tests.addon.conftest import form_fields, log_in, refusal_reason
from tests.conftest import NOT_ESHOP_IDS, install_via_fake
from tests.fakes.shoptet import FakeShoptet

ENTRY = "/addon/settings/"
PAGES = ["/addon/settings/overview/", "/addon/settings/deliveries/", "/addon/settings/progress/"]
ESHOP_ID = 1000001


@pytest.fixture
def eshop(fake_shoptet: FakeShoptet, db: None) -> Installation:
    installation = install_via_fake(fake_shoptet, ESHOP_ID)
    services.onboard(installation=installation)
    return Installation.objects.get(pk=installation.pk)


@pytest.mark.parametrize("value", NOT_ESHOP_IDS)
def test_the_entry_refuses_what_is_not_an_eshop_id(
    client: Client, fake_shoptet: FakeShoptet, eshop: Installation, value: str
) -> None:
    without_code = client.get(ENTRY, {"eshopId": value})
    with_code = client.get(ENTRY, {"eshopId": value, "code": fake_shoptet.issue_admin_code(ESHOP_ID)})

    for response in (without_code, with_code):
        assert response.status_code == 404, response.content.decode()
        assert refusal_reason(response) == "unknown-eshop"


@pytest.mark.parametrize("value", NOT_ESHOP_IDS)
def test_the_pages_refuse_what_is_not_an_eshop_id(
    client: Client, fake_shoptet: FakeShoptet, eshop: Installation, value: str
) -> None:
    login = log_in(client, fake_shoptet, eshop)

    for page in PAGES:
        response = client.get(page, login.query(eshopId=value))
        assert response.status_code == 403, (page, response.content.decode())
        assert refusal_reason(response) == "invalid-session"
    posted = client.post(
        "/addon/settings/preferences/",
        form_fields(login, eshopId=value, notification_email="thief@example.com", sync_orders="on"),
    )
    assert posted.status_code == 403
    assert not AddonSettings.objects.filter(installation=eshop).exists()
    assert not SettingsChange.objects.exists()
