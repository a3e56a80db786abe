from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from installations import export
from installations.models import Installation


class Command(BaseCommand):
    help = "Write one e-shop's mirrored orders, invoices and settings changes as a gzip JSON-lines file."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("eshop_id", type=int, help="Shoptet's e-shop id.")
        parser.add_argument("--output", help="File to write; default eshop-<id>-data.jsonl.gz here.")

    def handle(self, *args: Any, **options: Any) -> None:
        installation = Installation.objects.filter(eshop_id=options["eshop_id"]).first()
        if installation is None:
            raise CommandError(f"No installation has e-shop id {options['eshop_id']}.")
        output = options["output"] or export.filename(installation)
        with open(output, "wb") as file:
            for chunk in export.gzip_lines(installation):
                file.write(chunk)
        self.stdout.write(self.style.SUCCESS(f"Wrote {output}."))
