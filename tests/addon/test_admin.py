"""Partner staff see the addon settings and every change in Django's admin, read-only."""

from __future__ import annotations

import pytest
from django.test import Client

from installations.models import Installation
from tests.addon.conftest import ADMIN_EMAIL, form_fields, log_in
from tests.fakes.shoptet import FakeShoptet

pytestmark = pytest.mark.django_db


def test_staff_see_settings_and_their_history_read_only(
    client: Client, admin_client: Client, fake_shoptet: FakeShoptet, onboarded: Installation
) -> None:
    login = log_in(client, fake_shoptet, onboarded)
    client.post("/addon/settings/preferences/", form_fields(login, sync_orders="on", notification_email="a@b.cz"))

    settings_list = admin_client.get("/admin/installations/addonsettings/")
    changes_list = admin_client.get("/admin/installations/settingschange/")
    add_page = admin_client.get("/admin/installations/settingschange/add/")

    assert settings_list.status_code == changes_list.status_code == 200
    assert "a@b.cz" in settings_list.content.decode()
    assert changes_list.content.decode().count(ADMIN_EMAIL) == 2  # sync_invoices and notification_email
    assert add_page.status_code == 403
