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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
STARTED = re.compile(r"^run\s+\| (\S+) started \(pid (\d+)\)", re.MULTILINE)
RESTARTING = re.compile(
    r"^run\s+\| (\S+) exited unexpectedly with code (-?\d+)[^;]*; restarting in (\S+) s", re.MULTILINE
)
DEMO_ESHOP_ID = 1000001
# A guard against a hang only; what is asserted is what happened, never how fast.
GIVE_UP_AFTER = 90.0

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


def demo_environment(tmp_path: Path, port: int, fake_port: int) -> dict[str, str]:
    return {
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


def start_run(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        # In pytest's process group: a Ctrl-C or SIGTERM that stops the suite stops the platform too.
        return subprocess.Popen(
            [sys.executable, "scripts/run.py"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_for_health(process: subprocess.Popen[bytes], port: int, log_path: Path) -> bytes:
    status, body = 0, b""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        status, body = get_health(f"http://127.0.0.1:{port}/healthz")
        if status == 200:
            break
        time.sleep(0.5)
    assert status == 200, f"no healthy /healthz (last status {status}); see {log_path}:\n{log_tail(log_path)}"
    return body


def kill_leftovers(log_path: Path) -> None:
    for pgid in {int(pid) for _, pid in STARTED.findall(log_path.read_text(errors="replace"))}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def assert_no_survivors(pgids: set[int]) -> None:
    survivors = living_members(pgids)
    for _ in range(20):
        if not survivors:
            break
        time.sleep(0.1)
        survivors = living_members(pgids)
    assert survivors == []


def test_run_serves_healthz_in_demo_mode_and_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    port, fake_port = free_ports(2)
    env = demo_environment(tmp_path, port, fake_port)
    log_path = Path(os.environ.get("TEST_ARTIFACTS_DIR") or tmp_path) / "make-run.log"
    process = start_run(env, log_path)
    try:
        body = wait_for_health(process, port, log_path)
        assert json.loads(body) == {"database": "ok", "broker": "ok"}

        # From another terminal, without the PORT that `make run` was given: the command finds the platform
        # and the fake from what `make run` wrote down.
        another_terminal = {key: value for key, value in env.items() if key not in ("PORT", "FAKE_SHOPTET_PORT")}
        another_terminal.pop("PUBLIC_URL")
        installed = subprocess.run(
            [sys.executable, "manage.py", "install_demo_eshop"],
            cwd=ROOT,
            env=another_terminal,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert installed.returncode == 0, installed.stdout + installed.stderr
        assert f"Installed e-shop {DEMO_ESHOP_ID}" in installed.stdout
        fake_url = f"http://127.0.0.1:{fake_port}"
        wait_until(lambda: webhook_registrations(fake_url) > 0, "the demo e-shop's onboarding", process, log_path)

        # Long enough for beat to send each relay a few times (every 2-3 s).
        time.sleep(8)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0, log_tail(log_path)
        assert not (ROOT / "var" / "run.json").exists(), "make run left its run file behind"

        output = log_path.read_text(errors="replace")
        # The relays tick every 2-3 s; their routine lines stay out of a newcomer's terminal.
        assert "relay_deliveries[" not in output
        assert "Sending due task relay-" not in output
        started = dict(STARTED.findall(output))
        assert {"shoptet", "migrate", "web", "worker", "beat"} <= started.keys()
        # Each child leads its own process group, which also holds its workers (gunicorn's, Celery's pool).
        assert_no_survivors({int(pid) for pid in started.values()})
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        kill_leftovers(log_path)


def log_tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def started_pids(log_path: Path, name: str) -> list[int]:
    return [int(pid) for started, pid in STARTED.findall(log_path.read_text(errors="replace")) if started == name]


def restarts(log_path: Path) -> list[tuple[str, str, str]]:
    """(name, exit code, delay in seconds) of every restart the supervisor announced."""
    return RESTARTING.findall(log_path.read_text(errors="replace"))


def wait_until(condition: Callable[[], bool], what: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + GIVE_UP_AFTER
    while not condition() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.3)
    assert condition(), f"{what} did not happen; see {log_path}:\n{log_tail(log_path)}"


def fake_json(url: str, method: str = "GET") -> Any:
    request = urllib.request.Request(url, data=b"{}" if method == "POST" else None, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def webhook_registrations(fake_url: str) -> int:
    """Registration calls the platform made for the demo e-shop: the last step of its onboarding task."""
    requests = fake_json(f"{fake_url}/_fake/stats?eshopId={DEMO_ESHOP_ID}")["requests"]
    return sum(count for key, count in requests.items() if key.startswith("POST /api/webhooks"))


def test_run_restarts_a_killed_worker_and_web_and_still_stops_on_sigterm(tmp_path: Path) -> None:
    port, fake_port = free_ports(2)
    fake_url = f"http://127.0.0.1:{fake_port}"
    env = demo_environment(tmp_path, port, fake_port)
    log_path = Path(os.environ.get("TEST_ARTIFACTS_DIR") or tmp_path) / "make-run-restarts.log"
    process = start_run(env, log_path)
    try:
        wait_for_health(process, port, log_path)
        [worker_pid], [web_pid] = started_pids(log_path, "worker"), started_pids(log_path, "web")

        # The worker's main process and its pool at once, as the kernel's OOM killer or `kill -9 -<pgid>`
        # would; of the web only gunicorn's master, whose orphaned workers must not keep the port.
        os.killpg(worker_pid, signal.SIGKILL)
        os.kill(web_pid, signal.SIGKILL)
        wait_until(
            lambda: len(started_pids(log_path, "worker")) == 2 and len(started_pids(log_path, "web")) == 2,
            "a restart of the worker and the web",
            process,
            log_path,
        )
        assert sorted(restarts(log_path)) == [("web", "-9", "1"), ("worker", "-9", "1")]
        assert (
            "worker exited unexpectedly with code -9 (SIGKILL); restarting in 1 s (restart 1)" in log_path.read_text()
        )
        wait_for_health(process, port, log_path)

        # The onboarding task of an e-shop installed now can only run on the restarted worker.
        assert fake_json(f"{fake_url}/_fake/eshops/{DEMO_ESHOP_ID}/install", method="POST")["status"] == 200
        wait_until(lambda: webhook_registrations(fake_url) > 0, "the onboarding task", process, log_path)

        # A second death soon after the first waits twice as long.
        os.kill(started_pids(log_path, "web")[-1], signal.SIGKILL)
        wait_until(lambda: len(started_pids(log_path, "web")) == 3, "a second restart of the web", process, log_path)
        assert restarts(log_path)[-1] == ("web", "-9", "2")
        wait_for_health(process, port, log_path)

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log_tail(log_path)
        output = log_path.read_text(errors="replace")
        assert "SIGTERM received; stopping" in output
        assert_no_survivors({int(pid) for _, pid in STARTED.findall(output)})
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        kill_leftovers(log_path)
