"""A real SMTP server on loopback (aiosmtpd), the platform's mail settings pointing at it, Celery run inline."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import environ
import pytest
from aiosmtpd.controller import Controller

from addon import services as addon_services
from addon.auth import Admin
from config.celery import app as celery_app
from installations.models import Installation


@dataclass
class Mailbox:
    """What the server received, and how it answers: per recipient at RCPT, and for every message at DATA."""

    messages: list[EmailMessage] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    data_answer: str = "250 OK"
    attempts: int = 0

    def to(self, address: str) -> list[EmailMessage]:
        return [message for message in self.messages if message["To"] == address]

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        self.attempts += 1
        if address in self.refused:
            return self.refused[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not self.data_answer.startswith("250"):
            return self.data_answer
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))  # type: ignore[arg-type]
        return self.data_answer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def mailbox(settings) -> Iterator[Mailbox]:  # type: ignore[no-untyped-def]
    """An SMTP server on a free loopback port; EMAIL_URL, read as the settings read it, points at it."""
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    apply_email_url(settings, f"smtp://127.0.0.1:{port}")
    yield box
    controller.stop()


def apply_email_url(settings, url: str) -> None:  # type: ignore[no-untyped-def]
    for name, value in environ.Env.email_url_config(url).items():
        setattr(settings, name, value)
    settings.EMAIL_TIMEOUT = 5


@pytest.fixture(autouse=True)
def celery_inline() -> Iterator[None]:
    """Tasks run in this process as they are sent, retries included (their countdown is not waited for).

    Errors are not propagated: Celery runs an eager task's retries only then, as a worker would.
    """
    saved = (celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates)
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = False
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = saved


def set_notification_email(installation: Installation, address: str, *, language: str = "en") -> None:
    """Save the address as an admin of the e-shop does on the settings page, in their language."""
    admin = Admin(
        eshop_id=installation.eshop_id,
        installation_id=installation.pk,
        email="owner@example.com",
        name="Owner",
        language=language,
        session_id="test",
        logged_in_at=0,
    )
    addon_services.update_settings(installation=installation, admin=admin, values={"notification_email": address})
