"""Run the fake Shoptet: `python -m tests.fakes.shoptet --port 8001 --demo --platform-url http://127.0.0.1:8000`."""

from __future__ import annotations

import argparse
import signal
import threading

from .fake import FakeShoptet

DEMO_ESHOPS = [(1000001, "Demo e-shop", 40, 25), (1000002, "Druhý obchod", 5, 0)]


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake Shoptet on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--client-id", default="demo-client")
    parser.add_argument("--client-secret", default="demo-secret")
    parser.add_argument("--token-ttl", type=int, default=1800)
    parser.add_argument("--demo", action="store_true", help="create the demo e-shops 1000001 and 1000002")
    parser.add_argument(
        "--platform-url",
        help="platform base URL: system webhooks go to <url>/shoptet/webhooks/, installs to <url>/shoptet/install/",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args()

    fake = FakeShoptet(args.host, args.port, args.client_id, args.client_secret, args.token_ttl, verbose=args.verbose)
    if args.platform_url:
        platform = args.platform_url.rstrip("/")
        fake.set_system_webhook_url(f"{platform}/shoptet/webhooks/")
        fake.default_install_url = f"{platform}/shoptet/install/"
    if args.demo:
        for eshop_id, name, orders, invoices in DEMO_ESHOPS:
            fake.add_eshop(eshop_id, name=name, orders=orders, invoices=invoices)
    fake.start()
    print(f"Fake Shoptet on {fake.url} (client id {fake.client_id!r})", flush=True)
    print(f"  SHOPTET_PARTNER_URL={fake.partner_url}", flush=True)
    print(f"  SHOPTET_API_URL={fake.api_url}", flush=True)
    if args.demo:
        print(
            f"  install the demo e-shop: open {fake.url}/ or POST {fake.url}/_fake/eshops/1000001/install", flush=True
        )

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
