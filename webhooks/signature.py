"""Shoptet's webhook signature: lowercase hex HMAC-SHA1 of the raw body, keyed with the key string as-is."""

from __future__ import annotations

import hashlib
import hmac

HEADER = "Shoptet-Webhook-Signature"


class InvalidSignature(Exception):
    """The signature is missing or does not match the body under any accepted key."""


def sign(body: bytes, key: str) -> str:
    return hmac.new(key.encode(), body, hashlib.sha1).hexdigest()


def verify(body: bytes, signature: str, key: str) -> None:
    """Raise InvalidSignature unless `signature` is the hex HMAC-SHA1 of the raw body."""
    if not key or not signature:
        raise InvalidSignature
    # Compared as bytes: compare_digest refuses non-ASCII str, and a header may hold anything.
    if not hmac.compare_digest(sign(body, key).encode(), signature.strip().lower().encode("utf-8", "replace")):
        raise InvalidSignature


def verify_any(body: bytes, signature: str, keys: list[str]) -> None:
    """Raise InvalidSignature unless one of `keys` signed the body (every key is tried: constant time per key)."""
    matched = False
    for key in keys:
        try:
            verify(body, signature, key)
        except InvalidSignature:
            continue
        matched = True
    if not matched:
        raise InvalidSignature
