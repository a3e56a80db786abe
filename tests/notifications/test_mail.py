"""Notification e-mails through a real SMTP server on loopback: each kind in each language, the daily cap,
SMTP failures, and one e-shop's mail never reaching another."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from email.message import EmailMessage
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from installations import services as installation_services
from installations.models import Installation
from notifications import tasks
from notifications.models import Notification
from shoptet_api.errors import ShoptetError
from sync import jobs as sync_jobs
from sync.models import SyncJob
from tests.notifications.conftest import Mailbox, apply_email_url, free_port, set_notification_email

ADDRESS = "admin@eshop-one.example"
OTHER_ADDRESS = "admin@eshop-two.example"

pytestmark = pytest.mark.django_db


def fail_a_sync(installation: Installation) -> None:
    job = SyncJob.objects.create(installation=installation, resource="orders", mode="snapshot")
    sync_jobs.fail_job(job=job, error="gave up after 6 retries: Shoptet answered 503")


def fail_onboarding(installation: Installation) -> None:
    installation_services.record_onboarding_failure(installation=installation, error=ShoptetError("403"))


def suspend(installation: Installation) -> None:
    installation_services.suspend(installation=installation, cause="addon:suspend")


def resume(installation: Installation) -> None:
    suspend(installation)
    Notification.objects.filter(installation=installation).delete()  # only the resume's mail is looked at
    installation_services.approve(installation=installation, cause="addon:approve")


def silence_webhooks(installation: Installation) -> None:
    two_days_ago = timezone.now() - timedelta(days=2)
    Installation.objects.filter(pk=installation.pk).update(
        onboarding_status=Installation.Onboarding.DONE,
        onboarded_at=two_days_ago,
        status_changed_at=two_days_ago,
        last_webhook_at=two_days_ago,
    )
    tasks.notify_silent_webhooks.apply()


EVENTS: dict[str, Callable[[Installation], None]] = {
    "sync_failed": fail_a_sync,
    "onboarding_failed": fail_onboarding,
    "suspended": suspend,
    "resumed": resume,
    "webhooks_silent": silence_webhooks,
}

SUBJECTS = {
    ("sync_failed", "en"): "Syncing your e-shop's orders or invoices failed",
    ("sync_failed", "cs"): "Synchronizace objednávek nebo faktur vašeho e-shopu selhala",
    ("sync_failed", "sk"): "Synchronizácia objednávok alebo faktúr vášho e-shopu zlyhala",
    ("sync_failed", "hu"): "Nem sikerült szinkronizálni a webáruház rendeléseit vagy számláit",
    ("onboarding_failed", "en"): "Connecting the addon to your e-shop failed",
    ("onboarding_failed", "cs"): "Připojení doplňku k vašemu e-shopu selhalo",
    ("onboarding_failed", "sk"): "Pripojenie doplnku k vášmu e-shopu zlyhalo",
    ("onboarding_failed", "hu"): "Nem sikerült a kiegészítőt a webáruházhoz csatlakoztatni",
    ("suspended", "en"): "The addon was suspended",
    ("suspended", "cs"): "Doplněk byl pozastaven",
    ("suspended", "sk"): "Doplnok bol pozastavený",
    ("suspended", "hu"): "A kiegészítőt felfüggesztették",
    ("resumed", "en"): "The addon was resumed",
    ("resumed", "cs"): "Doplněk byl obnoven",
    ("resumed", "sk"): "Doplnok bol obnovený",
    ("resumed", "hu"): "A kiegészítő újra működik",
    ("webhooks_silent", "en"): "No notifications from your e-shop for more than a day",
    ("webhooks_silent", "cs"): "Už více než den žádná upozornění z vašeho e-shopu",
    ("webhooks_silent", "sk"): "Už viac ako deň žiadne upozornenia z vášho e-shopu",
    ("webhooks_silent", "hu"): "Több mint egy napja nem érkezett értesítés a webáruházból",
}
# The body's link line, which every kind ends with, in each language.
LINK_LINES = {
    "en": "Open the addon settings: ",
    "cs": "Otevřít nastavení doplňku: ",
    "sk": "Otvoriť nastavenia doplnku: ",
    "hu": "A kiegészítő beállításai: ",
}


def settings_link(installation: Installation, language: str) -> str:
    return f"http://testserver/addon/settings/?eshopId={installation.eshop_id}&language={language}"


def text_of(message: EmailMessage) -> str:
    """The plain-text body as written: SMTP carries lines ending in CRLF."""
    return str(message.get_content()).replace("\r\n", "\n")


def subject_of(message: EmailMessage) -> str:
    """The decoded subject; a long non-ASCII one is folded onto a continuation line on the wire."""
    return " ".join(str(message["Subject"]).split())


def relay() -> None:
    tasks.relay_notifications.apply()


@pytest.mark.parametrize("language", ["en", "cs", "sk", "hu"])
@pytest.mark.parametrize("kind", list(EVENTS))
def test_each_kind_arrives_in_the_admins_language_with_the_settings_link(
    mailbox: Mailbox, installation: Installation, kind: str, language: str
) -> None:
    set_notification_email(installation, ADDRESS, language=language)

    EVENTS[kind](installation)
    relay()

    [message] = mailbox.messages
    assert message["To"] == ADDRESS
    assert subject_of(message) == SUBJECTS[kind, language]
    body = text_of(message)
    assert f"{LINK_LINES[language]}{settings_link(installation, language)}\n" in body
    [notification] = Notification.objects.filter(installation=installation)
    assert (notification.kind, notification.status, notification.recipient, notification.language) == (
        kind,
        "sent",
        ADDRESS,
        language,
    )


def test_a_language_shoptet_does_not_offer_falls_back_to_english(mailbox: Mailbox, installation: Installation) -> None:
    set_notification_email(installation, ADDRESS, language="de")

    suspend(installation)
    relay()

    [message] = mailbox.messages
    assert subject_of(message) == "The addon was suspended"
    assert settings_link(installation, "en") in text_of(message)


def test_at_most_one_mail_per_kind_and_eshop_a_day(mailbox: Mailbox, installation: Installation) -> None:
    set_notification_email(installation, ADDRESS)

    for _ in range(3):
        suspend(installation)
        installation_services.approve(installation=installation, cause="addon:approve")
        fail_a_sync(installation)
    relay()
    relay()

    subjects = sorted(subject_of(message) for message in mailbox.messages)
    assert subjects == [
        "Syncing your e-shop's orders or invoices failed",
        "The addon was resumed",
        "The addon was suspended",
    ]
    assert Notification.objects.filter(installation=installation).count() == 3


def test_the_next_day_brings_a_new_mail_of_the_same_kind(mailbox: Mailbox, installation: Installation) -> None:
    set_notification_email(installation, ADDRESS)
    suspend(installation)
    relay()
    Notification.objects.filter(installation=installation).update(day=timezone.now().date() - timedelta(days=1))

    installation_services.approve(installation=installation, cause="addon:approve")
    suspend(installation)
    relay()

    assert [subject_of(message) for message in mailbox.messages].count("The addon was suspended") == 2


def test_the_silence_check_mails_only_eshops_silent_for_a_day_while_active(
    mailbox: Mailbox, installation: Installation, other_installation: Installation
) -> None:
    set_notification_email(installation, ADDRESS)
    set_notification_email(other_installation, OTHER_ADDRESS)
    two_days_ago, an_hour_ago = timezone.now() - timedelta(days=2), timezone.now() - timedelta(hours=1)
    done = Installation.Onboarding.DONE
    Installation.objects.filter(pk=installation.pk).update(
        onboarding_status=done, onboarded_at=two_days_ago, status_changed_at=two_days_ago, last_webhook_at=None
    )
    # Webhooks came an hour ago: not silent.
    Installation.objects.filter(pk=other_installation.pk).update(
        onboarding_status=done, onboarded_at=two_days_ago, status_changed_at=two_days_ago, last_webhook_at=an_hour_ago
    )

    tasks.notify_silent_webhooks.apply()
    tasks.notify_silent_webhooks.apply()
    relay()

    assert [message["To"] for message in mailbox.messages] == [ADDRESS]
    assert not Notification.objects.filter(installation=other_installation).exists()


def test_the_silence_check_walks_the_fleet_in_batches(
    mailbox: Mailbox, installation: Installation, fake_shoptet
) -> None:  # type: ignore[no-untyped-def]
    from notifications import services
    from tests.conftest import install_via_fake

    eshops = [installation] + [install_via_fake(fake_shoptet, 900000 + number) for number in range(4)]
    two_days_ago = timezone.now() - timedelta(days=2)
    for eshop in eshops:
        set_notification_email(eshop, f"admin@{eshop.eshop_id}.example")
    Installation.objects.update(
        onboarding_status=Installation.Onboarding.DONE,
        onboarded_at=two_days_ago,
        status_changed_at=two_days_ago,
        last_webhook_at=two_days_ago,
    )

    recorded = services.notify_silent_webhooks(batch_size=2)
    relay()

    assert recorded == 5
    assert sorted(message["To"] for message in mailbox.messages) == sorted(
        f"admin@{eshop.eshop_id}.example" for eshop in eshops
    )


def test_a_changes_run_that_will_be_retried_sends_nothing_until_it_keeps_failing(
    mailbox: Mailbox, installation: Installation
) -> None:
    set_notification_email(installation, ADDRESS)

    for _ in range(2):
        job = SyncJob.objects.create(installation=installation, resource="orders", mode="changes")
        sync_jobs.fail_job(job=job, error="Shoptet answered 503")
    relay()
    assert mailbox.messages == []

    job = SyncJob.objects.create(installation=installation, resource="orders", mode="changes")
    sync_jobs.fail_job(job=job, error="Shoptet answered 503")
    relay()

    assert [subject_of(message) for message in mailbox.messages] == ["Syncing your e-shop's orders or invoices failed"]


def test_no_address_sends_nothing_and_logs_it_skipped(
    mailbox: Mailbox, installation: Installation, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="notifications.services"):
        suspend(installation)
        relay()

    assert mailbox.messages == []
    assert mailbox.attempts == 0
    assert not Notification.objects.exists()
    assert any("notification skipped" in record.getMessage() for record in caplog.records)


def test_a_second_eshop_gets_its_own_mail_and_never_anothers(
    mailbox: Mailbox, installation: Installation, other_installation: Installation
) -> None:
    set_notification_email(installation, ADDRESS, language="cs")
    set_notification_email(other_installation, OTHER_ADDRESS, language="hu")

    suspend(installation)
    suspend(other_installation)
    relay()

    [mine] = mailbox.to(ADDRESS)
    [theirs] = mailbox.to(OTHER_ADDRESS)
    assert len(mailbox.messages) == 2
    assert settings_link(installation, "cs") in text_of(mine)
    assert str(other_installation.eshop_id) not in text_of(mine)
    assert settings_link(other_installation, "hu") in text_of(theirs)
    assert str(installation.eshop_id) not in text_of(theirs)
    assert (subject_of(mine), subject_of(theirs)) == ("Doplněk byl pozastaven", "A kiegészítőt felfüggesztették")


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"refuse": "451 4.3.0 Try again later"}, id="4xx at RCPT"),
        pytest.param({"data": "554 5.6.0 Message rejected"}, id="5xx at DATA"),
        pytest.param({"data": "421 4.3.2 Service not available"}, id="4xx at DATA"),
    ],
)
def test_an_smtp_refusal_is_retried_then_recorded_failed_and_other_mail_still_goes(
    mailbox: Mailbox, installation: Installation, other_installation: Installation, answer: dict[str, str]
) -> None:
    set_notification_email(installation, ADDRESS)
    set_notification_email(other_installation, OTHER_ADDRESS)
    if "refuse" in answer:
        mailbox.refused[ADDRESS] = answer["refuse"]
    suspend(installation)
    if "data" in answer:
        mailbox.data_answer = answer["data"]

    relay()
    mailbox.data_answer = "250 OK"
    suspend(other_installation)
    relay()

    failed = Notification.objects.get(installation=installation)
    assert (failed.status, failed.attempts, failed.recipient) == ("failed", tasks.SEND_MAX_RETRIES + 1, ADDRESS)
    assert answer.get("refuse", answer.get("data", "")).split()[0] in failed.error
    assert Installation.objects.get(pk=installation.pk).status == "suspended"
    assert [message["To"] for message in mailbox.messages] == [OTHER_ADDRESS]
    assert Notification.objects.get(installation=other_installation).status == "sent"


def test_an_address_the_server_refuses_for_good_fails_at_once(mailbox: Mailbox, installation: Installation) -> None:
    set_notification_email(installation, ADDRESS)
    mailbox.refused[ADDRESS] = "550 5.1.1 No such user"

    suspend(installation)
    relay()
    relay()

    failed = Notification.objects.get(installation=installation)
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert "550" in failed.error
    assert mailbox.messages == []


def test_an_smtp_server_that_is_down_is_retried_then_recorded_failed(
    settings,
    installation: Installation,  # type: ignore[no-untyped-def]
) -> None:
    apply_email_url(settings, f"smtp://127.0.0.1:{free_port()}")  # nothing listens there
    set_notification_email(installation, ADDRESS)

    suspend(installation)
    relay()

    failed = Notification.objects.get(installation=installation)
    assert (failed.status, failed.attempts) == ("failed", tasks.SEND_MAX_RETRIES + 1)
    assert "ConnectionRefusedError" in failed.error
    assert Installation.objects.get(pk=installation.pk).status == "suspended"


def test_a_sent_mail_is_not_sent_again(mailbox: Mailbox, installation: Installation) -> None:
    set_notification_email(installation, ADDRESS)
    suspend(installation)
    relay()
    notification = Notification.objects.get(installation=installation)

    tasks.send_notification.apply(args=(notification.pk,))
    Notification.objects.filter(pk=notification.pk).update(enqueued_at=timezone.now() - timedelta(days=1))
    relay()

    assert len(mailbox.messages) == 1


def test_the_link_opens_the_settings_page_through_the_eshops_sign_in(
    mailbox: Mailbox,
    installation: Installation,
    fake_shoptet,  # type: ignore[no-untyped-def]
) -> None:
    installation_services.onboard(installation=installation)
    set_notification_email(installation, ADDRESS, language="sk")
    suspend(installation)
    installation_services.approve(installation=installation, cause="addon:approve")
    relay()
    [message] = mailbox.to(ADDRESS) and [m for m in mailbox.messages if subject_of(m) == "Doplnok bol obnovený"]
    link = next(line for line in text_of(message).splitlines() if "/addon/settings/" in line).split(": ", 1)[1]

    response = Client().get(link)

    assert response.status_code == 302
    target = urlsplit(response["Location"])
    installation.refresh_from_db()
    assert response["Location"].startswith(f"{installation.oauth_url}authorize?")
    assert parse_qs(target.query)["scope"] == ["basic_eshop"]
