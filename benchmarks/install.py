"""Install callback latency against the fake Shoptet, served by gunicorn as in production.

Runs with DATABASE_URL (PostgreSQL) and REDIS_URL from the environment (`make bench` provisions both).
Measures the time Shoptet waits for our answer to `GET /shoptet/install/?code=…`: first installs, then
reinstalls, sequentially and with 10 installs at once. Shoptet's limit is 5 s; the code exchange is
capped at 3 s.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.shoptet import FakeShoptet  # noqa: E402 - the project root must be importable first

SEQUENTIAL = 300
CONCURRENT = 300
CONCURRENCY = 10
FIRST_ESHOP_ID = 7_000_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def platform_env(fake: FakeShoptet, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": Fernet.generate_key().decode() * 2,
        "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "127.0.0.1",
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "SHOPTET_CLIENT_ID": fake.client_id,
        "SHOPTET_CLIENT_SECRET": fake.client_secret,
        "SHOPTET_PARTNER_URL": fake.partner_url,
        "SHOPTET_API_URL": fake.api_url,
    }


def start_gunicorn(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:config.gunicorn",
        "config.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
        "--access-logfile",
        "/dev/null",
    ]
    # The platform logs every install; only the figures belong on the terminal.
    # The platform logs every install; only the figures belong on the terminal (failures exit with the body).
    server = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.2)
    server.terminate()
    raise SystemExit("gunicorn did not become ready in 30 s")


def install_once(fake: FakeShoptet, install_url: str, eshop_id: int) -> float:
    code = fake.issue_install_code(eshop_id, redirect_uri=install_url)
    started = time.perf_counter()
    response = requests.get(install_url, params={"code": code}, timeout=10)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"install of {eshop_id} answered {response.status_code}: {response.text}")
    return elapsed


def report(label: str, seconds: list[float]) -> None:
    ordered = sorted(seconds)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000
    print(f"{label:<34} n={len(ordered):<4} p50={p50:7.1f} ms  p99={p99:7.1f} ms  max={ordered[-1] * 1000:7.1f} ms")


def main() -> None:
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        raise SystemExit("benchmarks/install.py needs DATABASE_URL (PostgreSQL) and REDIS_URL: run `make bench`")
    port = free_port()
    with FakeShoptet() as fake:
        env = platform_env(fake, port)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        install_url = f"http://127.0.0.1:{port}/shoptet/install/"
        eshop_ids = list(range(FIRST_ESHOP_ID, FIRST_ESHOP_ID + SEQUENTIAL))
        for eshop_id in eshop_ids:
            fake.add_eshop(eshop_id)
        server = start_gunicorn(env, port)
        try:
            install_once(fake, install_url, eshop_ids[0])  # warm the workers up
            report("first install, sequential", [install_once(fake, install_url, e) for e in eshop_ids[1:]])
            report("reinstall, sequential", [install_once(fake, install_url, e) for e in eshop_ids[:SEQUENTIAL]])
            with ThreadPoolExecutor(CONCURRENCY) as pool:
                targets = [eshop_ids[i % len(eshop_ids)] for i in range(CONCURRENT)]
                concurrent = list(pool.map(lambda e: install_once(fake, install_url, e), targets))
            report(f"reinstall, {CONCURRENCY} at once", concurrent)
        finally:
            server.terminate()
            server.wait(timeout=15)


if __name__ == "__main__":
    main()
