"""One worker process for the token-sharing test: several threads call the API for one e-shop."""

from __future__ import annotations

import os
import sys
import threading

import django


def main(eshop_id: int, threads: int, calls: int) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from installations.models import Installation
    from shoptet_api.client import ShoptetClient

    installation = Installation.objects.get(eshop_id=eshop_id)
    failures: list[BaseException] = []

    def work() -> None:
        client = ShoptetClient(installation)
        try:
            for _ in range(calls):
                client.get_eshop()
        except BaseException as error:  # noqa: BLE001 - reported through the exit code
            failures.append(error)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for failure in failures:
        print(f"worker failure: {failure!r}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
