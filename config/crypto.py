"""Secrets at rest: MultiFernet over TOKEN_ENCRYPTION_KEYS (the first key encrypts, every key decrypts)."""

from __future__ import annotations

from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


class UndecryptableSecret(Exception):
    """A stored secret was encrypted with a key that TOKEN_ENCRYPTION_KEYS no longer holds."""


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError as error:
        raise ImproperlyConfigured(
            "Every TOKEN_ENCRYPTION_KEYS entry must be a Fernet key (32 url-safe base64-encoded bytes); "
            'make one with: python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
        ) from error


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.TOKEN_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken as error:
        raise UndecryptableSecret("no key in TOKEN_ENCRYPTION_KEYS decrypts this value") from error


def rotate(ciphertext: str) -> str:
    """Re-encrypt with the first key; values already under it come back re-encrypted as well."""
    return fernet().rotate(ciphertext.encode()).decode()


class EncryptedTextField(models.TextField):
    """A text column that holds Fernet ciphertext in the database and plain text in Python."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        if value is None or value == "":
            return value
        return decrypt(value)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt(str(value))
