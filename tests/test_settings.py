"""Configuration: production refuses to start without secrets, and passes Django's deploy checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

PROJECT_ROOT = Path(__file__).resolve().parents[1]

PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "k" * 20 + "-production-secret-key-with-enough-entropy-9f8e7d",
    "ALLOWED_HOSTS": "addons.example.com",
    "PUBLIC_URL": "https://addons.example.com",
    "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    "SHOPTET_CLIENT_ID": "client",
    "SHOPTET_CLIENT_SECRET": "secret",
    "SHOPTET_PARTNER_URL": "https://12345.myshoptet.com",
    "DATABASE_URL": "sqlite:///:memory:",
}


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION and k != "REDIS_URL"}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_settings_pass_the_deploy_checks() -> None:
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_each_missing_secret_stops_the_start() -> None:
    for name in ("SECRET_KEY", "TOKEN_ENCRYPTION_KEYS", "SHOPTET_CLIENT_ID", "SHOPTET_CLIENT_SECRET"):
        env = {k: v for k, v in PRODUCTION.items() if k != name}

        result = run_manage("check", **env)

        assert result.returncode != 0
        assert f"{name} is not set" in result.stderr


def test_conflicting_webhook_events_stop_the_start() -> None:
    result = run_manage("check", **PRODUCTION, SHOPTET_WEBHOOK_EVENTS="order:update,order:cancel")

    assert result.returncode != 0
    assert "order:update and order:cancel" in result.stderr


def test_without_credentials_debug_is_on_for_the_demo() -> None:
    result = run_manage("shell", "-c", "from django.conf import settings; print(settings.DEBUG)")

    assert result.stdout.strip().splitlines()[-1] == "True"


def test_unknown_webhook_events_stop_the_start() -> None:
    result = run_manage("check", **PRODUCTION, SHOPTET_WEBHOOK_EVENTS="order:create,order:prolong")

    assert result.returncode != 0
    assert "events Shoptet does not know: order:prolong" in result.stderr
