"""`manage.py import_snapshot FILE --eshop ID --resource orders|invoices`: import a saved result file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from installations.models import Installation
from shoptet_api.jobs import ResultFileError
from sync import snapshots
from sync.documents import RESOURCES, resource_named
from sync.management.progress import ProgressBar


class Command(BaseCommand):
    help = (
        "Import a Shoptet snapshot result file (gzip JSON Lines) into one e-shop's orders or invoices. "
        "All or nothing; a document never replaces a newer one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="the .json.gz result file")
        parser.add_argument("--eshop", type=int, required=True, help="Shoptet's e-shop id")
        parser.add_argument("--resource", choices=sorted(RESOURCES), required=True)

    def handle(self, *args: Any, file: Path, eshop: int, resource: str, **options: Any) -> None:
        installation = Installation.objects.filter(eshop_id=eshop).first()
        if installation is None:
            raise CommandError(f"No installation has e-shop id {eshop}.")
        if not file.is_file():
            raise CommandError(f"{file} is not a file.")
        bar = ProgressBar(self.stdout, f"{resource} from {file.name}")
        try:
            with file.open("rb") as stream:
                counts = snapshots.import_file(
                    installation=installation,
                    resource=resource_named(resource),
                    stream=stream,
                    total_bytes=file.stat().st_size,
                    progress=bar.documents,
                )
        except ResultFileError as error:
            bar.finish()
            raise CommandError(f"Nothing imported: {error}") from error
        bar.finish()
        self.stdout.write(
            f"{counts.received} {resource} read: {counts.imported} imported, "
            f"{counts.skipped} skipped (ours were as new or newer)."
        )
