"""`make run` end to end: scripts/run.py brings the platform up in demo mode, and Ctrl-C takes all of it down."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STARTED = re.compile(r"^run\s+\| (\S+) started \(pid (\d+)\)", re.MULTILINE)

pytestmark = pytest.mark.smoke


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def living_members(pgids: set[int]) -> list[str]:
    """Processes (zombies aside) whose process group is one of `pgids`, read from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _ppid, pgid = text[text.rindex(")") + 2 :].split()[:3]
        if int(pgid) in pgids and state != "Z":
            found.append(f"{stat.parent.name} {text[: text.rindex(')') + 1]}")
    return found


def get_health(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def test_run_serves_healthz_in_demo_mode_and_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    port, fake_port = free_ports(2)
    env = {
        **os.environ,
        "PORT": str(port),
        "FAKE_SHOPTET_PORT": str(fake_port),
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        # Empty values beat a developer's .env: embedded mode, demo mode.
        "REDIS_URL": "",
        "SHOPTET_CLIENT_ID": "",
        "SHOPTET_CLIENT_SECRET": "",
        "SHOPTET_PARTNER_URL": "",
    }
    log_path = Path(os.environ.get("TEST_ARTIFACTS_DIR") or tmp_path) / "make-run.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        # In pytest's process group: a Ctrl-C or SIGTERM that stops the suite stops the platform too.
        process = subprocess.Popen(
            [sys.executable, "scripts/run.py"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        status, body = 0, b""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            status, body = get_health(f"http://127.0.0.1:{port}/healthz")
            if status == 200:
                break
            time.sleep(0.5)
        assert status == 200, f"no healthy /healthz (last status {status}); see {log_path}:\n{log_tail(log_path)}"
        assert json.loads(body) == {"database": "ok", "broker": "ok"}

        # Long enough for beat to send each relay a few times (every 2-3 s).
        time.sleep(8)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0, log_tail(log_path)

        output = log_path.read_text(errors="replace")
        # The relays tick every 2-3 s; their routine lines stay out of a newcomer's terminal.
        assert "relay_deliveries[" not in output
        assert "Sending due task relay-" not in output
        started = dict(STARTED.findall(output))
        assert {"shoptet", "migrate", "web", "worker", "beat"} <= started.keys()
        # Each child leads its own process group, which also holds its workers (gunicorn's, Celery's pool).
        pgids = {int(pid) for pid in started.values()}
        survivors = living_members(pgids)
        for _ in range(20):
            if not survivors:
                break
            time.sleep(0.1)
            survivors = living_members(pgids)
        assert survivors == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pgid in {int(pid) for _, pid in STARTED.findall(log_path.read_text(errors="replace"))}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)


def log_tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
