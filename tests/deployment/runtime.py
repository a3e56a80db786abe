"""The deployment as the image builds it: the tree copied as `COPY . .` does, a virtualenv from
requirements.txt alone, and each service started with its own command line."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ("config", "installations", "shoptet_api", "webhooks", "sync")
STOP_TIMEOUT = 20.0


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    name = relative.rsplit("/", 1)[-1]
    for pattern in patterns:
        if fnmatch.fnmatch(relative, pattern):
            return True
        if pattern.startswith("**/") and fnmatch.fnmatch(name, pattern[3:]):
            return True
    return False


def copy_tree_as_image(target: Path) -> Path:
    """The build context minus .dockerignore: what `COPY . .` puts into /app."""
    patterns = dockerignore_patterns()

    def skip(directory: str, names: list[str]) -> set[str]:
        base = Path(directory).relative_to(ROOT).as_posix()
        return {name for name in names if ignored(name if base == "." else f"{base}/{name}", patterns)}

    shutil.copytree(ROOT, target, ignore=skip, symlinks=True)
    return target


def dockerfile_env() -> dict[str, str]:
    """The image's ENV values (single `ENV` instruction with KEY=VALUE pairs)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                key, _, value = pair.partition("=")
                values[key] = value
    return values


def base_python() -> str:
    """The interpreter behind the dev virtualenv: a new virtualenv must not see the dev packages."""
    return getattr(sys, "_base_executable", None) or sys.executable


def build_runtime_venv(venv: Path, app: Path, env: dict[str, str]) -> None:
    from tests.deployment import commands

    subprocess.run([base_python(), "-m", "venv", str(venv)], check=True)
    run_shell(commands.INSTALL, app, env)
    check = subprocess.run(
        [str(venv / "bin" / "pip"), "check"], cwd=app, env=env, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


def run_shell(command: str, cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    result = subprocess.run(
        ["sh", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{command!r} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


class Deployment:
    """The platform's services, each in its own process group, logging into `logs`."""

    def __init__(self, app: Path, env: dict[str, str], logs: Path) -> None:
        self.app = app
        self.env = env
        self.logs = logs
        self.services: dict[str, Service] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, command: list[str]) -> Service:
        log = self.logs / f"{name}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                command,
                cwd=self.app,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        service = Service(name, process, log)
        self.services[name] = service
        return service

    def run_to_end(self, name: str, command: list[str], timeout: float = 180) -> None:
        service = self.start(name, command)
        code = service.process.wait(timeout=timeout)
        assert code == 0, f"{name} exited with {code}:\n{service.tail()}"
        del self.services[name]

    def assert_running(self) -> None:
        for service in self.services.values():
            code = service.process.poll()
            assert code is None, f"{service.name} died with exit code {code}:\n{service.tail()}"

    def stop(self) -> dict[str, int]:
        """SIGTERM to every service, SIGKILL to what is left after STOP_TIMEOUT; the exit codes."""
        for service in self.services.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(service.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        codes = {}
        for service in self.services.values():
            try:
                codes[service.name] = service.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                codes[service.name] = -signal.SIGKILL
            with contextlib.suppress(ProcessLookupError):
                os.killpg(service.process.pid, signal.SIGKILL)
            service.process.wait()
        self.services.clear()
        return codes


def http(method: str, url: str, *, token: str | None = None, body: Any = None, timeout: float = 10) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token:
        headers["Authorization"] = f"Token {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    except OSError:
        return 0, None
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_until(check: Any, what: str, deployment: Deployment, timeout: float = 90) -> Any:
    """Poll `check()` until it returns something truthy; fail with the services' logs otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployment.assert_running()
        result = check()
        if result:
            return result
        time.sleep(0.5)
    logs = "\n".join(f"--- {s.name}\n{s.tail(15)}" for s in deployment.services.values())
    raise AssertionError(f"timed out waiting for {what}\n{logs}")
