"""Czech, Slovak, Hungarian and English from Shoptet's `#LANGUAGE#`, from compiled catalogs."""

from __future__ import annotations

import gettext
import html
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from installations.models import Installation
from tests.addon.conftest import form_fields, log_in
from tests.fakes.shoptet import FakeShoptet

pytestmark = pytest.mark.django_db

PAGES = {
    "cs": ("Přehled", "Oznámení ze Shoptetu", "Nastavení", "Shoptet nepotvrdil vaši totožnost"),
    "sk": ("Prehľad", "Oznámenia zo Shoptetu", "Nastavenia", "Shoptet nepotvrdil vašu totožnosť"),
    "hu": ("Áttekintés", "Értesítések a Shoptettől", "Beállítások", "A Shoptet nem igazolta a személyazonosságát"),
    "en": ("Overview", "Notifications from Shoptet", "Settings", "Shoptet did not confirm who you are"),
}


@pytest.mark.parametrize("language", sorted(PAGES))
def test_pages_speak_the_admins_language(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation, language: str
) -> None:
    overview, deliveries, preferences, refusal = PAGES[language]
    login = log_in(client, fake_shoptet, onboarded, language=language)

    page = html.unescape(client.get(login.url).content.decode())
    refused = html.unescape(
        client.get(
            "/addon/settings/", {"eshopId": str(onboarded.eshop_id), "language": language, "code": "x"}
        ).content.decode()
    )

    assert f'<html lang="{language}">' in page
    assert f'<h1 class="page-title">{overview}</h1>' in page
    assert f">{deliveries}</a>" in page
    assert f">{preferences}</a>" in page
    assert f'<html lang="{language}">' in refused
    assert f'<h1 id="refused-title" class="page-title">{refusal}</h1>' in refused


def test_djangos_own_messages_follow_the_language(
    client: Client, fake_shoptet: FakeShoptet, onboarded: Installation
) -> None:
    login = log_in(client, fake_shoptet, onboarded, language="cs")

    response = client.post("/addon/settings/preferences/", form_fields(login, notification_email="nope"))

    assert response.status_code == 400
    assert "Vložte platnou e-mailovou adresu." in html.unescape(response.content.decode())


def test_plural_forms_follow_the_language(client: Client, fake_shoptet: FakeShoptet, onboarded: Installation) -> None:
    from webhooks.models import WebhookDelivery

    for _ in range(3):
        WebhookDelivery.objects.create(installation=onboarded, eshop_id=onboarded.eshop_id, status="failed")
    login = log_in(client, fake_shoptet, onboarded, language="sk")

    page = html.unescape(client.get(login.url).content.decode())

    assert "3 oznámenia zo Shoptetu za posledných 24 hodín sa nepodarilo spracovať." in page


def unescape(text: str) -> str:
    return text.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")


def po_entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    """msgid → (msgid_plural or "", [msgstr] or [msgstr[0], msgstr[1], …]) of a .po file, header excluded."""
    entries: dict[str, tuple[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    key = ""
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if not line.strip():
            msgid = unescape("".join(current.get("msgid", [])))
            if msgid:
                translations = [unescape("".join(v)) for k, v in sorted(current.items()) if k.startswith("msgstr")]
                entries[msgid] = (unescape("".join(current.get("msgid_plural", []))), translations)
            current, key = {}, ""
        elif not line.startswith("#"):
            match = re.match(r'^(msgid|msgid_plural|msgstr(?:\[\d\])?) "(.*)"$', line)
            if match:
                key = match.group(1)
                current.setdefault(key, []).append(match.group(2))
            elif line.startswith('"'):
                current[key].append(line[1:-1])
    return entries


@pytest.mark.parametrize("language", ["cs", "sk", "hu"])
def test_every_message_is_translated_and_compiled(language: str) -> None:
    folder = Path(settings.LOCALE_PATHS[0]) / language / "LC_MESSAGES"
    source = po_entries(folder / "django.po")
    with (folder / "django.mo").open("rb") as compiled_file:
        compiled = gettext.GNUTranslations(compiled_file)

    assert len(source) > 100
    assert [msgid for msgid, (_, translations) in source.items() if not all(translations)] == []
    for msgid, (plural, translations) in source.items():
        shown = compiled.ngettext(msgid, plural, 1) if plural else compiled.gettext(msgid)
        assert shown == translations[0], msgid
