from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from installations.services import reencrypt_secrets


class Command(BaseCommand):
    help = "Re-encrypt every stored OAuth token and signature key with the first TOKEN_ENCRYPTION_KEYS key."

    def handle(self, *args: Any, **options: Any) -> None:
        count = reencrypt_secrets()
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted the secrets of {count} installations."))
