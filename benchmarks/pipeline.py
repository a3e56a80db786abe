"""Webhook → mirror pipeline under load, in production topology on one machine.

gunicorn, one Celery worker for `default`/`shoptet` (concurrency = cores) and one for `imports`, beat,
PostgreSQL and Redis of their own (the command lines of docker-compose.yml), and a fake Shoptet on loopback.
Three rows, each with the load average beside it:

- drain: a burst of distinct signed `order:create` webhooks for one e-shop, counted from the first send to the
  last order row stored (not to the delivery status). The ceiling is the same documents fetched straight
  from the fake over 3 parallel connections, in the same run.
- end to end: `order:update` webhooks at a fixed rate over 20 e-shops (the order edited at the fake, then
  the signed webhook); latency from the send to the new `changeTime` in the stored row, p50/p99/max, lost.
- fairness: while the burst drains, a second e-shop installs (install → onboarded) and sends webhooks of its
  own (webhook → row, p50/p99/max).

Sizes (env): PIPELINE_BURST (default 3000; the issue's figure is 16000), PIPELINE_RATE (100 events/s),
PIPELINE_SECONDS (10; the issue's figure is 30), PIPELINE_ESHOPS (20).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.shoptet import FakeShoptet  # noqa: E402
from tests.fakes.shoptet.clock import parse_datetime  # noqa: E402
from tests.outages.stack import Stack  # noqa: E402

BURST = int(os.environ.get("PIPELINE_BURST", "3000"))
RATE = float(os.environ.get("PIPELINE_RATE", "100"))
SECONDS = float(os.environ.get("PIPELINE_SECONDS", "10"))
ESHOPS = int(os.environ.get("PIPELINE_ESHOPS", "20"))
ORDERS_PER_ESHOP = 30
BURST_ESHOP_ID = 7_100_001
QUIET_ESHOP_ID = 7_100_002
FIRST_E2E_ESHOP_ID = 7_200_001
QUIET_WEBHOOKS = 20
SENDERS = 16
DRAIN_TIMEOUT = float(os.environ.get("PIPELINE_DRAIN_TIMEOUT", "600"))
SETTLE_TIMEOUT = 180.0


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f}"


def percentiles(values: list[float]) -> str:
    if not values:
        return "p50 - p99 - max -"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered):.2f}s p99 {p99:.2f}s max {ordered[-1]:.2f}s"


def order_times(stack: Stack, eshop_ids: list[int]) -> dict[tuple[int, str], datetime | None]:
    rows = stack.query(
        "SELECT i.eshop_id, o.code, o.change_time FROM sync_order o "
        "JOIN installations_installation i ON i.id = o.installation_id WHERE i.eshop_id = ANY(%s)",
        eshop_ids,
    )
    return {(int(str(eshop)), str(code)): changed for eshop, code, changed in rows}  # type: ignore[misc]


def onboarded(stack: Stack, eshop_id: int) -> bool:
    rows = stack.query("SELECT onboarding_status FROM installations_installation WHERE eshop_id = %s", eshop_id)
    return bool(rows) and rows[0][0] == "done"


@dataclass
class Watch:
    """Sent events waiting for their row: (e-shop, code) → (sent at, the changeTime that proves it)."""

    pending: dict[tuple[int, str], tuple[float, datetime | None]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sent(self, key: tuple[int, str], at: float, change_time: datetime | None) -> None:
        with self.lock:
            # An order edited again before its row showed: the newer edit is what must arrive.
            first = self.pending.get(key, (at, None))[0]
            self.pending[key] = (first, change_time)

    def check(self, stack: Stack, eshop_ids: list[int]) -> None:
        stored = order_times(stack, eshop_ids)
        now = time.monotonic()
        with self.lock:
            for key, (at, wanted) in list(self.pending.items()):
                if key not in stored:
                    continue
                changed = stored[key]
                if wanted is None or (changed is not None and changed >= wanted):
                    self.latencies.append(now - at)
                    del self.pending[key]


def poll_until(check: Callable[[], bool], timeout: float, pause: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(pause)
    return False


def fetch_ceiling(fake: FakeShoptet, eshop_id: int, codes: list[str]) -> float:
    """The same order details fetched straight from the fake, 3 at a time (Shoptet's limit per token)."""
    token = fake.issue_api_token(eshop_id)
    session = requests.Session()
    headers = {"Shoptet-Access-Token": token, "Content-Type": "application/vnd.shoptet.v1.0"}

    def fetch(code: str) -> None:
        session.get(f"{fake.api_url}/api/orders/{quote(code, safe='')}", headers=headers, timeout=10).raise_for_status()

    started = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(fetch, codes))
    return len(codes) / (time.monotonic() - started)


def drain_and_fairness(stack: Stack, fake: FakeShoptet) -> None:
    stack.install(BURST_ESHOP_ID)
    codes = [fake.create_order(BURST_ESHOP_ID, webhook=False) for _ in range(BURST)]
    ceiling = fetch_ceiling(fake, BURST_ESHOP_ID, codes)
    ceiling_load = load()
    failures: list[int] = []
    started = time.monotonic()

    def deliver(code: str) -> None:
        for _ in range(20):
            status = fake.send_webhook(BURST_ESHOP_ID, "order:create", code)
            if 200 <= status < 300:
                return
            time.sleep(0.2)
        failures.append(status)

    burst_sent = threading.Event()

    def send_burst() -> None:
        with ThreadPoolExecutor(SENDERS) as pool:
            list(pool.map(deliver, codes))
        burst_sent.set()

    drained_at: list[float] = []

    def watch_drain() -> None:
        # Its own thread: the moment the last row appears, whatever the quiet e-shop's part is doing then.
        if poll_until(lambda: len(order_times(stack, [BURST_ESHOP_ID])) >= BURST, DRAIN_TIMEOUT):
            drained_at.append(time.monotonic())

    sender = threading.Thread(target=send_burst, daemon=True)
    sender.start()
    drain_watcher = threading.Thread(target=watch_drain, daemon=True)
    drain_watcher.start()
    # The quiet e-shop arrives once a quarter of the burst is stored.
    poll_until(lambda: _stored_deliveries(stack, BURST_ESHOP_ID) >= BURST // 4, DRAIN_TIMEOUT)
    fake.add_eshop(QUIET_ESHOP_ID)
    install_started = time.monotonic()
    status, body = fake.install(QUIET_ESHOP_ID, f"{stack.platform}/shoptet/install/")
    assert status == 200, body
    onboarding_ok = poll_until(lambda: onboarded(stack, QUIET_ESHOP_ID), DRAIN_TIMEOUT)
    onboarding_took = time.monotonic() - install_started
    onboarding_load = load()
    quiet = Watch()
    for _ in range(QUIET_WEBHOOKS):
        code = fake.create_order(QUIET_ESHOP_ID, webhook=False)
        quiet.sent((QUIET_ESHOP_ID, code), time.monotonic(), None)
        fake.send_webhook(QUIET_ESHOP_ID, "order:create", code)
        quiet.check(stack, [QUIET_ESHOP_ID])
        time.sleep(0.5)
    burst_remaining_at_quiet_end = BURST - len(order_times(stack, [BURST_ESHOP_ID]))

    def quiet_settled() -> bool:
        quiet.check(stack, [QUIET_ESHOP_ID])
        return not quiet.pending

    poll_until(quiet_settled, SETTLE_TIMEOUT)
    quiet_load = load()

    drain_watcher.join()
    drained = bool(drained_at)
    took = (drained_at[0] if drained else time.monotonic()) - started
    drain_load = load()
    sender.join()
    lost = BURST - len(order_times(stack, [BURST_ESHOP_ID]))
    rate = BURST / took
    print(
        f"drain: {BURST} distinct order:create webhooks, first send → last order row: {took:.1f}s = {rate:.0f}/s; "
        f"ceiling (same fetches straight from the fake, 3 parallel) {ceiling:.0f}/s ({ceiling_load}); "
        f"ratio {rate / ceiling:.2f}; lost {lost}{'' if drained else ' (timed out)'}; not acknowledged "
        f"{len(failures)}; {drain_load}"
    )
    print(
        f"fairness: quiet e-shop install → onboarded {onboarding_took:.1f}s"
        f"{'' if onboarding_ok else ' (timed out)'} ({onboarding_load}); its webhook → row "
        f"{percentiles(quiet.latencies)}, lost {len(quiet.pending)} of {QUIET_WEBHOOKS}, while the burst "
        f"still had {burst_remaining_at_quiet_end} orders to store ({quiet_load})"
    )


def _stored_deliveries(stack: Stack, eshop_id: int) -> int:
    rows = stack.query("SELECT count(*) FROM webhooks_webhookdelivery WHERE eshop_id = %s", eshop_id)
    return int(str(rows[0][0]))


def end_to_end(stack: Stack, fake: FakeShoptet) -> None:
    eshop_ids = [FIRST_E2E_ESHOP_ID + index for index in range(ESHOPS)]
    for eshop_id in eshop_ids:
        stack.install(eshop_id, orders=ORDERS_PER_ESHOP, wait=False)
    stack.wait_until(
        lambda: all(stack.jobs(eshop_id, "completed") >= 2 for eshop_id in eshop_ids),
        "every e-shop onboarded and imported",
        timeout=SETTLE_TIMEOUT,
    )
    codes = {eshop_id: sorted(fake.eshop(eshop_id).orders) for eshop_id in eshop_ids}
    watch = Watch()
    events = int(RATE * SECONDS)
    refused: list[int] = []
    stop = threading.Event()

    def watcher() -> None:
        while not stop.is_set():
            watch.check(stack, eshop_ids)
            time.sleep(0.2)

    def send(index: int) -> None:
        eshop_id = eshop_ids[index % ESHOPS]
        code = codes[eshop_id][(index // ESHOPS) % len(codes[eshop_id])]
        detail = fake.update_order(eshop_id, code, webhook=False, email=f"bench-{index}@example.com")
        watch.sent((eshop_id, code), time.monotonic(), parse_datetime(detail["changeTime"]))
        status = fake.send_webhook(eshop_id, "order:update", code)
        if not 200 <= status < 300:
            refused.append(status)

    checker = threading.Thread(target=watcher, daemon=True)
    checker.start()
    started = time.monotonic()
    with ThreadPoolExecutor(SENDERS) as pool:
        for index in range(events):
            pause = started + index / RATE - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            pool.submit(send, index)
    sent_load = load()
    poll_until(lambda: not watch.pending, SETTLE_TIMEOUT, pause=0.5)
    stop.set()
    checker.join()
    print(
        f"end to end: {events} order:update at {RATE:.0f}/s over {ESHOPS} e-shops, send → new changeTime stored: "
        f"{percentiles(watch.latencies)}; lost {len(watch.pending)}, refused {len(refused)} "
        f"({sent_load} at the end of sending, {load()} now)"
    )


def main() -> None:
    fake = FakeShoptet().start()
    stack = Stack(Path(tempfile.mkdtemp(prefix="platform-pipeline-bench-")), fake)
    try:
        stack.start()
        print(f"pipeline: burst {BURST}, {RATE:.0f} events/s for {SECONDS:.0f}s over {ESHOPS} e-shops; {load()}")
        drain_and_fairness(stack, fake)
        end_to_end(stack, fake)
        stack.deployment.assert_running()
    finally:
        stack.stop()
        fake.stop()


if __name__ == "__main__":
    main()
