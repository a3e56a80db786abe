#!/usr/bin/env python3
"""`make run`: prepare the database, then supervise web, Celery worker and beat (and a fake Shoptet in demo mode).

Standard library only. Every child runs in its own session and its output comes back prefixed with its
name. A preparation step (migrate, ...) that fails stops the start and exits 1. A long-running process
(web, worker, beat, the fake Shoptet) that dies is restarted after 1, 2, 4 ... seconds, at most 30 s,
counted again from 1 s once it has stayed up for a minute. Only Ctrl-C or SIGTERM stops them all
(SIGTERM, then SIGKILL after 10 s) and exits 0.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SHOPTET_CREDENTIALS = ("SHOPTET_CLIENT_ID", "SHOPTET_CLIENT_SECRET", "SHOPTET_PARTNER_URL")
# The folders settings.py points at (EMBEDDED_BROKER_DIR, STATIC_ROOT); created here so every child finds them.
VAR_DIRS = ("var/broker/queue", "var/broker/processed", "var/static")
BEAT_SCHEDULE = "var/celerybeat-schedule"
# Where the running platform is, for commands run from another terminal (settings.RUN_STATE_FILE).
RUN_STATE_FILE = "var/run.json"
STOP_TIMEOUT = 10.0
# Restart backoff: doubles from the first delay up to the cap with every quick death in a row; a process
# that stayed up STABLE_AFTER seconds counts as healthy again, so its next death waits the first delay.
RESTART_DELAY_FIRST = 1.0
RESTART_DELAY_MAX = 30.0
STABLE_AFTER = 60.0
FAKE_READY_TIMEOUT = 30.0
NAME_WIDTH = 7
DEMO_ADMIN = ("admin", "admin")
CREATE_DEMO_ADMIN = """
from django.contrib.auth import get_user_model
User = get_user_model()
if User.objects.filter(is_superuser=True).exists():
    print("superuser exists")
else:
    User.objects.create_superuser({username!r}, "admin@example.com", {password!r})
    print("superuser created")
"""

PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL("libc.so.6", use_errno=True) if sys.platform.startswith("linux") else None


class Stopped(Exception):
    """Ctrl-C or SIGTERM arrived."""


class ChildFailed(Exception):
    """A step or a service exited when it should not have."""


def say(message: str) -> None:
    emit("run", message.encode())


def emit(name: str, line: bytes) -> None:
    sys.stdout.buffer.write(f"{name:<{NAME_WIDTH}} | ".encode() + line.rstrip(b"\r") + b"\n")
    sys.stdout.flush()


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file; comments, blank lines and `export ` prefixes allowed."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key.strip()] = value
    return values


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    # Runs in the child before exec: if the supervisor itself is killed, the child gets SIGTERM
    # instead of living on unsupervised.
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    def __init__(self, name: str, process: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.process = process
        self.pending = b""
        self.lines: list[str] = []

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def feed(self, data: bytes) -> None:
        *lines, self.pending = (self.pending + data).split(b"\n")
        for line in lines:
            self.show(line)

    def flush(self) -> None:
        if self.pending:
            self.show(self.pending)
            self.pending = b""

    def show(self, line: bytes) -> None:
        self.lines.append(line.decode(errors="replace"))
        emit(self.name, line)


@dataclass
class Service:
    """A long-running process the supervisor keeps alive: its command, its current child, its restarts."""

    name: str
    args: list[str]
    child: Child | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float = 0.0
    restarts: int = 0


def restart_delay(quick_deaths: int) -> float:
    """1 s after the first death, then 2, 4, 8 ... seconds, never more than RESTART_DELAY_MAX."""
    return min(RESTART_DELAY_FIRST * 2.0 ** max(quick_deaths - 1, 0), RESTART_DELAY_MAX)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"code {returncode} ({signal.Signals(-returncode).name})"
    return f"code {returncode}"


class Supervisor:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.children: list[Child] = []
        self.services: list[Service] = []
        self.selector = selectors.DefaultSelector()
        self.stop_signal: int | None = None
        self.signals_seen = 0

    def handle_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_signal = signum
        self.signals_seen += 1

    def check_stop(self) -> None:
        if self.stop_signal is not None:
            raise Stopped

    def spawn(self, name: str, args: list[str]) -> Child:
        process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Safe here: the supervisor is single-threaded, and the hook only calls prctl.
            preexec_fn=_die_with_parent,
        )
        if process.stdout is None:
            raise RuntimeError("stdout=PIPE gives a stream")
        os.set_blocking(process.stdout.fileno(), False)
        child = Child(name, process)
        self.selector.register(process.stdout, selectors.EVENT_READ, child)
        self.children.append(child)
        say(f"{name} started (pid {process.pid}): {shlex.join(display_args(args))}")
        return child

    def pump(self, timeout: float) -> None:
        """Copy whatever the children printed to our stdout, waiting at most `timeout` seconds."""
        if not self.selector.get_map():
            time.sleep(timeout)
            return
        for key, _ in self.selector.select(timeout):
            child: Child = key.data
            stream: IO[bytes] = key.fileobj  # type: ignore[assignment]
            try:
                data = os.read(stream.fileno(), 65536)
            except BlockingIOError:
                continue
            if data:
                child.feed(data)
            else:
                self.selector.unregister(stream)
                stream.close()
                child.flush()

    def drain(self, child: Child, timeout: float = 2.0) -> None:
        """Read a finished child's last output."""
        deadline = time.monotonic() + timeout
        stream = child.process.stdout
        while stream is not None and not stream.closed and time.monotonic() < deadline:
            self.pump(0.05)

    def run_step(self, name: str, args: list[str]) -> Child:
        """Run a preparation command to its end; Ctrl-C stops it."""
        child = self.spawn(name, args)
        while child.running:
            self.check_stop()
            self.pump(0.2)
        self.drain(child)
        self.children.remove(child)
        if child.process.returncode != 0:
            raise ChildFailed(f"{name} failed with exit code {child.process.returncode}")
        return child

    def wait_for_url(self, child: Child, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_stop()
            if not child.running:
                self.drain(child)
                raise ChildFailed(f"{child.name} exited with code {child.process.returncode} before it was ready")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own loopback URL
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            self.pump(0.3)
        raise ChildFailed(f"{child.name} did not answer {url} within {timeout:.0f} s")

    def start_service(self, name: str, args: list[str]) -> Child:
        """Start a long-running process that watch() restarts whenever it dies."""
        service = Service(name, args)
        self.services.append(service)
        return self.launch(service)

    def launch(self, service: Service) -> Child:
        service.child = self.spawn(service.name, service.args)
        service.started_at = time.monotonic()
        return service.child

    def watch(self) -> None:
        """Relay output and restart dead services until a signal arrives."""
        while True:
            self.check_stop()
            now = time.monotonic()
            for service in self.services:
                if service.child is not None and not service.child.running:
                    self.schedule_restart(service, now)
                elif service.child is None and now >= service.restart_at:
                    service.restarts += 1
                    self.launch(service)
            self.pump(0.2)

    def schedule_restart(self, service: Service, now: float) -> None:
        child = service.child
        if child is None:
            return
        self.retire(child)
        service.child = None
        if now - service.started_at >= STABLE_AFTER:
            service.quick_deaths = 0
        service.quick_deaths += 1
        delay = restart_delay(service.quick_deaths)
        service.restart_at = now + delay
        say(
            f"{service.name} exited unexpectedly with {describe_exit(child.process.returncode)}; "
            f"restarting in {delay:g} s (restart {service.restarts + 1})"
        )

    def retire(self, child: Child) -> None:
        """Forget a child that exited: end what is left of its process group and read its last output."""
        # Its own workers (gunicorn's, Celery's pool) would otherwise live on, holding the port or the
        # output pipe, beside the process that replaces it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.process.pid, signal.SIGKILL)
        self.drain(child)
        stream = child.process.stdout
        if stream is not None and not stream.closed:
            self.selector.unregister(stream)
            stream.close()
        child.flush()
        self.children.remove(child)

    def shutdown(self) -> None:
        """SIGTERM to every child, SIGKILL to their whole process groups after STOP_TIMEOUT."""
        signals_before = self.signals_seen
        for child in self.children:
            if child.running:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(child.running for child in self.children) and time.monotonic() < deadline:
            if self.signals_seen > signals_before:
                say("asked again; killing now")
                break
            self.pump(0.1)
        for child in self.children:
            if child.running:
                say(f"{child.name} did not stop within {STOP_TIMEOUT:.0f} s; killing it")
            # The group also holds the child's own workers (gunicorn, Celery pool); none may outlive it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()
        for child in self.children:
            self.drain(child, timeout=0.5)
            if child.process.stdout is not None and not child.process.stdout.closed:
                self.selector.unregister(child.process.stdout)
                child.process.stdout.close()
            child.flush()
        self.children.clear()


def display_args(args: list[str]) -> list[str]:
    shown = ["<code>" if "\n" in arg else arg for arg in args]
    return ["python", *shown[1:]] if args and args[0] == PYTHON else shown


def manage(*args: str) -> list[str]:
    return [PYTHON, "manage.py", *args]


def main() -> int:
    dotenv = read_dotenv(ROOT / ".env")
    env = {**dotenv, **os.environ}  # the environment wins over .env, as in settings.py
    port = int(env.get("PORT") or 8000)
    public_url = (env.get("PUBLIC_URL") or f"http://127.0.0.1:{port}").rstrip("/")
    env["PORT"] = str(port)
    env["PUBLIC_URL"] = public_url
    env["PYTHONUNBUFFERED"] = "1"
    embedded = not env.get("REDIS_URL")
    demo = not all(env.get(name) for name in SHOPTET_CREDENTIALS)

    for folder in VAR_DIRS:
        (ROOT / folder).mkdir(parents=True, exist_ok=True)
    if not port_is_free(port):
        say(f"error: port {port} on 127.0.0.1 is already in use; set PORT to another port")
        return 1

    supervisor = Supervisor(env)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, supervisor.handle_signal)

    try:
        database = (env.get("DATABASE_URL") or "sqlite").split(":", 1)[0]
        broker = "filesystem (embedded mode, var/broker)" if embedded else "Redis"
        say(f"{'demo mode (fake Shoptet, DEBUG on)' if demo else 'Shoptet mode'}; database {database}; broker {broker}")
        fake_url = ""
        if demo:
            if any(env.get(name) for name in SHOPTET_CREDENTIALS):
                say(f"not all of {', '.join(SHOPTET_CREDENTIALS)} are set: starting in demo mode")
            fake_url = start_fake_shoptet(supervisor, env, public_url)

        supervisor.run_step("migrate", manage("migrate", "--noinput"))
        supervisor.run_step("cache", manage("createcachetable"))
        supervisor.run_step("static", manage("collectstatic", "--noinput"))
        admin_created = False
        if demo:
            username, password = DEMO_ADMIN
            code = CREATE_DEMO_ADMIN.format(username=username, password=password)
            admin = supervisor.run_step("admin", manage("shell", "-c", code))
            admin_created = "superuser created" in admin.lines

        supervisor.start_service("web", web_command(port))
        supervisor.start_service("worker", worker_command(embedded))
        supervisor.start_service(
            "beat", [PYTHON, "-m", "celery", "-A", "config", "beat", "-l", "info", "--schedule", BEAT_SCHEDULE]
        )
        write_run_state(public_url, fake_url)
        print_banner(port, public_url, fake_url, admin_created)
        supervisor.watch()
    except Stopped:
        say(f"{signal.Signals(supervisor.stop_signal or signal.SIGTERM).name} received; stopping")
        supervisor.shutdown()
        say("stopped")
        return 0
    except ChildFailed as failure:
        say(f"error: {failure}; stopping")
        supervisor.shutdown()
        return 1
    except BaseException:
        supervisor.shutdown()
        raise
    finally:
        remove_run_state()
    return 0


def write_run_state(public_url: str, fake_url: str) -> None:
    """Tell `manage.py install_demo_eshop` in another terminal where the platform and the fake are."""
    state = {"pid": os.getpid(), "platform_url": public_url, "fake_url": fake_url}
    (ROOT / RUN_STATE_FILE).write_text(json.dumps(state) + "\n")


def remove_run_state() -> None:
    """Remove the file if it is still ours (another `make run` on another port may have written it since)."""
    path = ROOT / RUN_STATE_FILE
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def start_fake_shoptet(supervisor: Supervisor, env: dict[str, str], public_url: str) -> str:
    """Start the fake Shoptet and point the platform's Shoptet settings at it."""
    port_setting = env.get("FAKE_SHOPTET_PORT")
    if port_setting:
        fake_port = int(port_setting)
    else:
        wanted = int(env["PORT"]) + 1
        fake_port = wanted if port_is_free(wanted) else free_port()
    fake_url = f"http://127.0.0.1:{fake_port}"
    env.update(
        SHOPTET_CLIENT_ID="demo-client",
        SHOPTET_CLIENT_SECRET="demo-secret",  # noqa: S106 - the fake's demo client, not a secret
        SHOPTET_PARTNER_URL=f"{fake_url}/partner",
        SHOPTET_API_URL=fake_url,
        DEBUG="1",
    )
    fake = supervisor.start_service(
        "shoptet",
        [PYTHON, "-m", "tests.fakes.shoptet", "--port", str(fake_port), "--demo", "--platform-url", public_url],
    )
    supervisor.wait_for_url(fake, f"{fake_url}/_fake/stats", FAKE_READY_TIMEOUT)
    return fake_url


def web_command(port: int) -> list[str]:
    return [
        PYTHON,
        "-m",
        "gunicorn",
        "--config",
        "python:config.gunicorn",
        "config.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
        "--threads",
        "4",
        "--timeout",
        "30",
        # Leaves room inside the supervisor's 10 s stop window.
        "--graceful-timeout",
        "8",
        # Its default path is per user, so two platforms on one machine would fight over it.
        "--no-control-socket",
    ]


def worker_command(embedded: bool) -> list[str]:
    command = [PYTHON, "-m", "celery", "-A", "config", "worker", "-l", "info", "-Q", "priority,default,shoptet,imports"]
    # The filesystem broker and SQLite serialise everything anyway; more processes only add lock waits.
    return [*command, "--concurrency", "2"] if embedded else command


def print_banner(port: int, public_url: str, fake_url: str, admin_created: bool) -> None:
    local_url = f"http://127.0.0.1:{port}"
    say("")
    say(f"Platform       {local_url}/" + (f"  (public URL {public_url}/)" if public_url != local_url else ""))
    say(f"Admin          {local_url}/admin/")
    say(f"Health         {local_url}/healthz")
    if fake_url:
        username, password = DEMO_ADMIN
        if admin_created:
            say(f"Demo admin     user {username!r}, password {password!r} (created now)")
        else:
            say(f"Demo admin     a superuser already exists (the demo one is {username!r} / {password!r})")
        say(f"Fake Shoptet   {fake_url}/")
        python = ".venv/bin/python" if Path(PYTHON).parent.parent == ROOT / ".venv" else PYTHON
        say("Demo e-shop    Admin → Installations → 'Install the demo e-shop', or from another terminal:")
        say(f"  {python} manage.py install_demo_eshop")
    say("Stop with Ctrl-C.")
    say("")


if __name__ == "__main__":
    sys.exit(main())
