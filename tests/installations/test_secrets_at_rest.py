"""OAuth tokens, signature keys and cached API tokens never sit in storage as plain text."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.core.cache import cache
from django.db import connection

from config import crypto
from installations import services
from installations.models import Installation
from shoptet_api import tokens
from tests.fakes.shoptet import FakeShoptet

pytestmark = pytest.mark.django_db(transaction=True)

PG_DUMP_CANDIDATES = ["/usr/lib/postgresql/15/bin/pg_dump", shutil.which("pg_dump") or ""]


def dump_database() -> str:
    """Everything the database holds, as `pg_dump` writes it (SQLite: the raw file)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        if not Path(db["NAME"]).is_file():
            pytest.skip("an in-memory SQLite database has no file to dump; `make test` runs on PostgreSQL")
        return Path(db["NAME"]).read_bytes().decode("latin-1")
    pg_dump = next(path for path in PG_DUMP_CANDIDATES if path and Path(path).exists())
    completed = subprocess.run(
        [pg_dump, "--data-only", "-h", db["HOST"], "-p", str(db["PORT"]), "-U", db["USER"], db["NAME"]],
        capture_output=True,
        check=True,
        env={"PGPASSWORD": db["PASSWORD"] or ""},
    )
    return completed.stdout.decode()


def dump_cache() -> str:
    if not settings.REDIS_URL:
        return ""
    client = cache._cache.get_client()  # type: ignore[attr-defined]
    # DUMP serialises a key of any type (strings, the metrics hashes) with its whole value.
    return "\n".join(repr(client.dump(key)) for key in client.scan_iter("*"))


def test_no_secret_appears_in_a_database_dump(
    installation: Installation, other_installation: Installation, fake_shoptet: FakeShoptet
) -> None:
    services.onboard(installation=installation)
    api_token = tokens.get_access_token(installation)
    installation.refresh_from_db()
    secrets = [
        installation.oauth_token,
        other_installation.oauth_token,
        installation.webhook_signature_key,
        api_token,
    ]
    assert all(secrets)

    stored = dump_database() + dump_cache()

    assert str(installation.eshop_id) in stored  # the dump is real and holds the rows
    for secret in secrets:
        assert secret not in stored
        assert secret[:16] not in stored


def test_rows_are_readable_after_rotation_and_reencryption(
    installation: Installation,
    other_installation: Installation,
    settings,  # type: ignore[no-untyped-def]
) -> None:
    old_key = settings.TOKEN_ENCRYPTION_KEYS[0]
    token_before = installation.oauth_token
    new_key = Fernet.generate_key().decode()

    settings.TOKEN_ENCRYPTION_KEYS = [new_key, old_key]
    assert Installation.objects.get(pk=installation.pk).oauth_token == token_before
    assert services.reencrypt_secrets() == 2

    settings.TOKEN_ENCRYPTION_KEYS = [new_key]
    assert Installation.objects.get(pk=installation.pk).oauth_token == token_before
    assert Installation.objects.get(pk=other_installation.pk).oauth_token == other_installation.oauth_token


def test_a_row_under_a_forgotten_key_fails_loudly(installation: Installation, settings) -> None:  # type: ignore[no-untyped-def]
    settings.TOKEN_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    with pytest.raises(crypto.UndecryptableSecret):
        Installation.objects.get(pk=installation.pk)


def test_a_malformed_key_is_a_configuration_error(settings) -> None:  # type: ignore[no-untyped-def]
    from django.core.exceptions import ImproperlyConfigured

    settings.TOKEN_ENCRYPTION_KEYS = ["too-short"]

    with pytest.raises(ImproperlyConfigured, match="Fernet key"):
        crypto.encrypt("x")
