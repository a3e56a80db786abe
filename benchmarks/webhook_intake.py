"""Webhook intake under load: gunicorn as in production, PostgreSQL, Redis; 32 and 50 concurrent senders.

Runs with DATABASE_URL (PostgreSQL) from the environment (`make bench` provisions it) and a Redis of its own,
which it stops for the last run. Every run sends a fixed count of distinct signed deliveries and reports
deliveries/s and p50/p99 latency; the same counts go to a bare Django view on the same server first (the
ceiling). Senders: wrk with a Lua script when installed (Debian's `wrk` package), else Python threads.
Afterwards a Celery worker and the relay drain the log, and every event must have been processed exactly once
(`--intake-only` skips the drain). Every figure is printed with the machine's load average beside it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COUNT = 10_000
EXACT_COUNT = 2_000
CONNECTIONS = (32, 50)
ESHOPS = 20
FIRST_ESHOP_ID = 8_000_000
# A real Shoptet event that no built-in handler answers with API calls: the figures are the platform's own.
EVENT = "product:update"
BARE_PATH = "/bench/bare/"
WEBHOOK_PATH = "/shoptet/webhooks/"
DRAIN_TIMEOUT = 900.0


# ---------------------------------------------------------------------------
# Served by gunicorn: the platform plus a bare view at BARE_PATH (the ceiling)
# ---------------------------------------------------------------------------


def bare_view(request: Any) -> Any:
    from django.http import JsonResponse

    request.read()
    return JsonResponse({"status": "ok"})


def __getattr__(name: str) -> Any:
    # ROOT_URLCONF points here in the benchmark's gunicorn: the platform's routes plus the bare view.
    if name == "urlpatterns":
        from django.urls import path
        from django.views.decorators.csrf import csrf_exempt

        from config.urls import urlpatterns

        return [path(BARE_PATH.strip("/") + "/", csrf_exempt(bare_view)), *urlpatterns]
    raise AttributeError(name)


_application: Any = None


def application(environ: dict[str, Any], start_response: Any) -> Any:
    """gunicorn's entry point: config.wsgi's application with the benchmark's URLconf."""
    global _application
    if _application is None:
        from django.conf import settings

        from config.wsgi import application as platform

        settings.ROOT_URLCONF = __name__
        _application = platform
    return _application(environ, start_response)


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def platform_env(port: int, redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": Fernet.generate_key().decode() * 2,
        "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "127.0.0.1",
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "REDIS_URL": redis_url,
        "SHOPTET_CLIENT_ID": "bench-client",
        "SHOPTET_CLIENT_SECRET": "bench-secret",
        # Nothing here calls Shoptet; a closed port makes sure of it.
        "SHOPTET_PARTNER_URL": "http://127.0.0.1:9/partner",
        "SHOPTET_API_URL": "http://127.0.0.1:9",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }


class Redis:
    """A Redis server of the benchmark's own, so that stopping it harms nobody else."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise SystemExit("redis-server is not installed")
        self.process = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@contextmanager
def running(command: list[str], env: dict[str, str], ready_url: str | None = None) -> Iterator[None]:
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        if ready_url is not None:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if requests.post(ready_url, data=b"{}", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(f"{command[2]} did not become ready")
                time.sleep(0.2)
        yield
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def gunicorn(port: int) -> list[str]:
    # The production command (Dockerfile, scripts/run.py), with this module's URLconf wrapper as the app.
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:config.gunicorn",
        "benchmarks.webhook_intake:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
        "--no-control-socket",
    ]


def celery_worker() -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "-Q",
        "priority,default,shoptet",
        "--concurrency",
        "2",
        "-l",
        "warning",
        "--without-gossip",
        "--without-mingle",
    ]


# ---------------------------------------------------------------------------
# Senders
# ---------------------------------------------------------------------------


@dataclass
class Figures:
    sent: int
    ok: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        return self.sent / self.seconds


LUA = """
local items = {%(items)s}
local nthreads = %(threads)d
local path = "%(path)s"
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

function init(args)
  index = tid + 1
  last = index
  quota = 0
  for i = tid + 1, #items, nthreads do quota = quota + 1 end
  answered = 0
  ok = 0
  -- wrk builds the first thread's first request once to check the script; that one is never sent
  checked = tid ~= 0
end

function request()
  local item = items[index]
  if not checked then
    checked = true
  elseif item then
    last = index
    index = index + nthreads
  else
    item = items[last]  -- wrk keeps its connections busy; the extra copies are duplicates
  end
  local headers = {["Content-Type"] = "application/json", ["Shoptet-Webhook-Signature"] = item[2]}
  return wrk.format("POST", path, headers, item[1])
end

function response(status, headers, body)
  answered = answered + 1
  if status == 200 then ok = ok + 1 end
  if answered == quota then
    local marker = io.open("%(markers)s/" .. tid, "w")
    marker:write(ok)
    marker:close()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  io.write(string.format('\\nFIGURES {"p50": %%d, "p99": %%d}\\n', latency:percentile(50), latency:percentile(99)))
end
"""


def lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def send_with_wrk(url: str, path: str, items: list[tuple[bytes, str]], connections: int) -> Figures:
    threads = 2
    with tempfile.TemporaryDirectory() as directory:
        markers = Path(directory) / "markers"
        markers.mkdir()
        script = Path(directory) / "send.lua"
        entries = ",".join(f"{{{lua_string(body.decode())},{lua_string(sig)}}}" for body, sig in items)
        script.write_text(LUA % {"items": entries, "threads": threads, "path": path, "markers": markers})
        wrk = subprocess.Popen(
            [
                "wrk",
                "-t",
                str(threads),
                "-c",
                str(connections),
                "-d",
                "600s",
                "--timeout",
                "10s",
                "-s",
                str(script),
                url,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        started = time.monotonic()
        while len(list(markers.iterdir())) < threads:
            if wrk.poll() is not None:
                raise SystemExit("wrk ended before every delivery was answered")
            time.sleep(0.005)
        seconds = time.monotonic() - started
        wrk.send_signal(signal.SIGINT)
        output, _ = wrk.communicate(timeout=30)
        ok = sum(int((markers / name).read_text()) for name in os.listdir(markers))
    figures = json.loads(output.split("FIGURES", 1)[1].strip().splitlines()[0])
    for line in output.splitlines():
        if "Socket errors" in line or "Non-2xx" in line:
            print(f"{'':<44} wrk: {line.strip()}", flush=True)
    return Figures(len(items), ok, seconds, figures["p50"] / 1000, figures["p99"] / 1000)


def send_with_python(url: str, path: str, items: list[tuple[bytes, str]], connections: int) -> Figures:
    chunks = [items[i::connections] for i in range(connections)]

    def run(chunk: list[tuple[bytes, str]]) -> list[tuple[int, float]]:
        results = []
        with requests.Session() as session:
            for body, sig in chunk:
                started = time.perf_counter()
                response = session.post(
                    url + path,
                    data=body,
                    headers={"Content-Type": "application/json", "Shoptet-Webhook-Signature": sig},
                    timeout=10,
                )
                results.append((response.status_code, time.perf_counter() - started))
        return results

    started = time.monotonic()
    with ThreadPoolExecutor(connections) as pool:
        results = [result for chunk in pool.map(run, chunks) for result in chunk]
    seconds = time.monotonic() - started
    latencies = sorted(latency for _, latency in results)
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    ok = sum(1 for status, _ in results if status == 200)
    return Figures(len(items), ok, seconds, statistics.median(latencies) * 1000, p99 * 1000)


def send(url: str, path: str, items: list[tuple[bytes, str]], connections: int) -> Figures:
    if shutil.which("wrk"):
        return send_with_wrk(url, path, items, connections)
    return send_with_python(url, path, items, connections)


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def deliveries(tag: str, keys: dict[int, str]) -> list[tuple[bytes, str]]:
    """COUNT distinct signed deliveries spread over the e-shops; instances carry the run's tag."""
    from webhooks.signature import sign

    moment = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    eshop_ids = sorted(keys)
    items = []
    for index in range(COUNT):
        eshop_id = eshop_ids[index % len(eshop_ids)]
        body = json.dumps(
            {"eshopId": eshop_id, "event": EVENT, "eventCreated": moment, "eventInstance": f"{tag}-{index:06d}"},
            separators=(",", ":"),
        ).encode()
        items.append((body, sign(body, keys[eshop_id])))
    return items


def create_installations() -> dict[int, str]:
    from installations.models import Installation

    # A previous run's rows are encrypted under keys that are gone: start afresh.
    Installation.objects.filter(eshop_id__range=(FIRST_ESHOP_ID, FIRST_ESHOP_ID + ESHOPS)).only("pk").delete()
    keys = {}
    for eshop_id in range(FIRST_ESHOP_ID, FIRST_ESHOP_ID + ESHOPS):
        key = Fernet.generate_key().hex()[:32]
        Installation.objects.update_or_create(
            eshop_id=eshop_id,
            defaults={
                "oauth_token": "bench-oauth-token",
                "webhook_signature_key": key,
                "status": Installation.Status.ACTIVE,
                "onboarding_status": Installation.Onboarding.DONE,
            },
        )
        keys[eshop_id] = key
    return keys


def stored(tag: str) -> tuple[int, int]:
    """(rows, distinct deliveries) stored for a run."""
    from webhooks.models import WebhookDelivery

    rows = WebhookDelivery.objects.filter(event_instance__startswith=f"{tag}-")
    return rows.count(), rows.values("event_instance").distinct().count()


def drain(env: dict[str, str]) -> tuple[float, int]:
    """Start a worker, relay until nothing is left; (seconds, deliveries processed)."""
    from webhooks import tasks
    from webhooks.models import WebhookDelivery

    pending = WebhookDelivery.objects.filter(status=WebhookDelivery.Status.RECEIVED)
    total = pending.count()
    started = time.monotonic()
    with running(celery_worker(), env):
        while pending.exists():
            if time.monotonic() - started > DRAIN_TIMEOUT:
                raise SystemExit(f"{pending.count()} deliveries still unprocessed after {DRAIN_TIMEOUT:.0f} s")
            tasks.relay_deliveries.apply(throw=True)
            time.sleep(0.5)
    return time.monotonic() - started, total


def exactly_once() -> tuple[int, int, int]:
    """(events, events processed once, deliveries not processed): duplicates point at their event's processing."""
    from django.db.models import Count

    from webhooks.models import WebhookDelivery

    runs = (
        WebhookDelivery.objects.filter(event=EVENT, status="processed", duplicate_of__isnull=True)
        .values("idempotency_key")
        .annotate(runs=Count("pk"))
    )
    events = WebhookDelivery.objects.filter(event=EVENT).values("idempotency_key").distinct().count()
    once = sum(1 for row in runs if row["runs"] == 1)
    unprocessed = WebhookDelivery.objects.filter(event=EVENT).exclude(status="processed").count()
    return events, once, unprocessed


def load_average() -> str:
    """The machine's 1, 5 and 15 minute load averages: other work on the same cores bends every figure."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def report(label: str, figures: Figures, ceiling: Figures | None = None) -> None:
    line = (
        f"{label:<44} n={figures.sent:<6} {figures.per_second:7.0f}/s  "
        f"p50={figures.p50_ms:6.1f} ms  p99={figures.p99_ms:6.1f} ms  200s={figures.ok}"
    )
    if ceiling is not None:
        line += f"  ratio to bare view={figures.per_second / ceiling.per_second:.2f}"
    print(f"{line}  {load_average()}", flush=True)


def main() -> None:
    intake_only = "--intake-only" in sys.argv[1:]
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        raise SystemExit("benchmarks/webhook_intake.py needs DATABASE_URL (PostgreSQL): run `make bench`")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as directory:
        redis = Redis(Path(directory))
        redis.start()
        try:
            measure(url, port, redis, drain_after=not intake_only)
        finally:
            redis.stop()


def measure(url: str, port: int, redis: Redis, *, drain_after: bool = True) -> None:
    env = platform_env(port, redis.url)
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True)
    import django

    django.setup()
    keys = create_installations()
    run = time.strftime("%H%M%S")  # tags this run's deliveries apart from any earlier run's
    sender = "wrk" if shutil.which("wrk") else "Python threads"
    print(f"senders: {sender}; gunicorn 2 workers x 4 threads; {COUNT} deliveries per run", flush=True)
    with running(gunicorn(port), env, ready_url=url + BARE_PATH):
        send(url, WEBHOOK_PATH, deliveries(f"{run}-warmup", keys)[:2000], 16)
        for connections in CONNECTIONS:
            ceiling = send(url, BARE_PATH, deliveries(f"{run}-bare{connections}", keys), connections)
            report(f"bare Django view, {connections} connections", ceiling)
            figures = send(url, WEBHOOK_PATH, deliveries(f"{run}-c{connections}", keys), connections)
            report(f"webhook intake, {connections} connections", figures, ceiling)
            rows, distinct = stored(f"{run}-c{connections}")
            print(f"{'':<44} stored {rows} rows, {distinct} distinct of {COUNT} sent", flush=True)
        redis.stop()
        figures = send(url, WEBHOOK_PATH, deliveries(f"{run}-noredis", keys), 50)
        report("webhook intake, 50 connections, Redis stopped", figures)
        rows, distinct = stored(f"{run}-noredis")
        lost = COUNT - distinct
        print(f"{'':<44} stored {rows} rows, {distinct} distinct of {COUNT} sent, lost {lost}", flush=True)
        # Exact bookkeeping, one request per delivery: every delivery sent, answered and stored.
        exact = deliveries(f"{run}-exact", keys)[:EXACT_COUNT]
        checked = send_with_python(url, WEBHOOK_PATH, exact, 50)
        rows, distinct = stored(f"{run}-exact")
        lost += len(exact) - distinct
        print(
            f"{'':<44} Python senders: sent {len(exact)}, answered 200: {checked.ok}, stored {distinct}",
            flush=True,
        )
    if not drain_after:
        if lost:
            raise SystemExit("deliveries were lost")
        return
    redis.start()
    seconds, total = drain(env)
    print(f"drain: {total} deliveries processed in {seconds:.1f} s ({total / seconds:.0f}/s)", flush=True)
    events, once, unprocessed = exactly_once()
    print(f"exactly once: {once} of {events} events processed once, {unprocessed} deliveries unprocessed")
    if lost or once != events or unprocessed:
        raise SystemExit("deliveries were lost or not processed exactly once")


if __name__ == "__main__":
    main()
