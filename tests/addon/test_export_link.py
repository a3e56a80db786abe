"""The settings page's download link: signed for one installation, expiring, refused clearly otherwise."""

from __future__ import annotations

import gzip
import html
import json
import re
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core import signing
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from installations.models import Installation
from tests.addon.conftest import log_in
from tests.fakes.shoptet import FakeShoptet

pytestmark = pytest.mark.django_db


def export_link(client: Client, fake: FakeShoptet, installation: Installation) -> dict[str, str]:
    """The link the preferences page offers, as its query values."""
    login = log_in(client, fake, installation)
    page = client.get("/addon/settings/preferences/", login.query()).content.decode()
    match = re.search(r'href="(/addon/settings/export/\?[^"]+)"', page)
    assert match, "the preferences page offers no download link"
    return {key: values[0] for key, values in parse_qs(urlsplit(html.unescape(match.group(1))).query).items()}


def test_the_link_downloads_that_eshops_data_only(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation, other_onboarded: Installation
) -> None:
    from sync import refresh as sync_refresh
    from sync.documents import resource_named
    from sync.models import Order

    for installation in (onboarded, other_onboarded):
        sync_refresh.upsert_document(
            installation=installation,
            resource=resource_named("orders"),
            document={"code": f"O-{installation.eshop_id}", "changeTime": "2026-01-01T00:00:00+0100", "items": []},
        )
    query = export_link(client, fake_shoptet, onboarded)

    response = client.get("/addon/settings/export/", query)

    assert response.status_code == 200 and response["Content-Type"] == "application/gzip"
    lines = [json.loads(line) for line in gzip.decompress(response.getvalue()).splitlines()]
    assert [line["code"] for line in lines if line["type"] == "order"] == [f"O-{onboarded.eshop_id}"]
    assert Order.objects.filter(installation=other_onboarded).exists()


def test_a_wrong_signature_is_403(client: Client, fake_shoptet: FakeShoptet, onboarded: Installation) -> None:
    query = export_link(client, fake_shoptet, onboarded)
    forged = signing.dumps({"installation": onboarded.pk, "eshop": onboarded.eshop_id}, salt="another.salt")

    assert client.get("/addon/settings/export/", {**query, "s": query["s"][:-2] + "xx"}).status_code == 403
    assert client.get("/addon/settings/export/", {**query, "s": forged}).status_code == 403


def test_another_eshops_id_is_404(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation, other_onboarded: Installation
) -> None:
    query = export_link(client, fake_shoptet, onboarded)

    response = client.get("/addon/settings/export/", {**query, "eshopId": str(other_onboarded.eshop_id)})

    assert response.status_code == 404


def test_an_expired_link_is_403(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation, settings: Any
) -> None:
    query = export_link(client, fake_shoptet, onboarded)
    settings.EXPORT_LINK_MAX_AGE = timedelta(seconds=-1)  # every link is older than that

    response = client.get("/addon/settings/export/", query)

    assert response.status_code == 403 and "expired" in response.content.decode()


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(max_size=300), eshop_id=st.text(max_size=30))
def test_any_link_parameters_get_a_clear_refusal(onboarded: Installation, value: str, eshop_id: str) -> None:
    response = Client().get("/addon/settings/export/", {"s": value, "eshopId": eshop_id})

    assert response.status_code in (403, 404)
    assert response.content
