"""Staff logins lock out after repeated failures (django-axes, AXES_* in settings), per user name and address."""

from __future__ import annotations

from typing import Any

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.test import Client

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"
PASSWORD = "correct-horse-battery-staple-42"


@pytest.fixture
def staff(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("ops", password=PASSWORD, is_staff=True, is_superuser=True)


def log_in(client: Client, password: str, *, username: str = "ops", address: str = "192.0.2.10") -> Any:
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address)


def test_the_right_password_after_a_few_failures_still_works(client: Client, staff: Any) -> None:
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert log_in(client, "wrong-password").status_code == 200  # the form again, with an error

    response = log_in(client, PASSWORD)

    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200
    assert not AccessAttempt.objects.exists()  # a success resets the count


def test_repeated_failures_lock_the_account_out_even_with_the_right_password(client: Client, staff: Any) -> None:
    for _ in range(settings.AXES_FAILURE_LIMIT):
        log_in(client, "wrong-password")

    response = log_in(client, PASSWORD)

    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302  # still sent to the login page
    attempt = AccessAttempt.objects.get()
    assert (attempt.username, attempt.ip_address) == ("ops", "192.0.2.10")
    assert attempt.failures_since_start >= settings.AXES_FAILURE_LIMIT
    assert PASSWORD not in attempt.post_data


def test_the_lockout_is_per_user_name_and_address(client: Client, staff: Any, django_user_model: Any) -> None:
    django_user_model.objects.create_user("colleague", password=PASSWORD, is_staff=True)
    for _ in range(settings.AXES_FAILURE_LIMIT):
        log_in(client, "wrong-password")

    colleague = log_in(Client(), PASSWORD, username="colleague")
    elsewhere = log_in(Client(), PASSWORD, address="198.51.100.7")

    assert colleague.status_code == 302
    assert elsewhere.status_code == 302


def test_the_lockout_lasts_the_cool_off() -> None:
    assert settings.AXES_FAILURE_LIMIT == 5
    assert settings.AXES_COOLOFF_TIME.total_seconds() == 30 * 60
