from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from installations import demo


class Command(BaseCommand):
    help = "Demo mode: let the fake Shoptet install its demo e-shop through the install callback."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--eshop-id", type=int, default=demo.DEMO_ESHOP_ID)
        parser.add_argument(
            "--fake-url", help="the fake Shoptet's base URL (default: the one `make run` started, else PORT + 1)"
        )
        parser.add_argument(
            "--platform-url",
            help="the running platform's base URL the fake calls (default: the one `make run` serves, else PUBLIC_URL)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = demo.install_demo_eshop(
                eshop_id=options["eshop_id"], fake_url=options["fake_url"], platform_url=options["platform_url"]
            )
        except demo.DemoUnavailable as error:
            raise CommandError(str(error)) from error
        if not result.succeeded:
            raise CommandError(f"The install callback answered HTTP {result.status}: {result.body}")
        self.stdout.write(self.style.SUCCESS(f"Installed e-shop {options['eshop_id']}; onboarding follows."))
