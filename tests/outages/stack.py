"""The platform in production mode on PostgreSQL and Redis servers of its own, which a test may restart or stop.

The suite's own servers stay untouched: `scripts/services.sh` starts a second pair, and web (gunicorn),
both workers and beat run from this tree with the same command lines as docker-compose.yml.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import redis
from cryptography.fernet import Fernet

from tests.deployment import commands
from tests.deployment.runtime import ROOT, Deployment, dockerfile_env, http, run_shell, wait_until
from tests.fakes.shoptet import FakeShoptet
from tests.test_make_run import free_ports

SERVICES_SCRIPT = ROOT / "scripts" / "services.sh"
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def _service_env(directory: Path) -> dict[str, str]:
    values = {}
    for line in (directory / "env").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        values[key] = value
    return values


def _pg_os_user() -> str | None:
    """The user services.sh runs PostgreSQL as (it refuses root); None when it is the current user."""
    if os.geteuid() != 0:
        return None
    for user in ("postgres", "platformtest"):
        if subprocess.run(["id", user], capture_output=True, check=False).returncode == 0:
            return user
    raise AssertionError("services.sh found no user to run PostgreSQL as")


class Stack:
    """Own PostgreSQL and Redis, and the platform's services on them."""

    def __init__(self, base: Path, fake: FakeShoptet) -> None:
        self.base = base
        # Not under pytest's temporary folder: PostgreSQL runs as another user, who must reach its data.
        self.services_dir = Path(tempfile.mkdtemp(prefix="platform-outages-"))
        self.fake = fake
        subprocess.run(["bash", str(SERVICES_SCRIPT), "start", str(self.services_dir)], check=True)
        servers = _service_env(self.services_dir)
        self.database_url = servers["DATABASE_URL"]
        self.redis_url = servers["REDIS_URL"]
        self.redis_port = int(servers["REDIS_PORT"])
        (web_port,) = free_ports(1)
        self.platform = f"http://127.0.0.1:{web_port}"
        self.env = {
            **dockerfile_env(),
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "TMPDIR": str(base),
            "PORT": str(web_port),
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PUBLIC_URL": self.platform,
            "SHOPTET_CLIENT_ID": fake.client_id,
            "SHOPTET_CLIENT_SECRET": fake.client_secret,
            "SHOPTET_PARTNER_URL": fake.partner_url,
            "SHOPTET_API_URL": fake.api_url,
            "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        }
        self.deployment = Deployment(ROOT, self.env, base / "logs")
        self.token = ""

    # -- the platform ---------------------------------------------------------------------------------
    def start(self) -> None:
        for name in commands.ONE_OFF:
            self.deployment.run_to_end(name, commands.SERVICES[name])
        self.token = self._staff_token()
        for name, command in commands.SERVICES.items():
            if name in commands.ONE_OFF:
                continue
            if name == "beat":  # its schedule file in the stack's folder, not in the tree
                command = [*command[:-1], str(self.base / "celerybeat-schedule")]
            self.deployment.start(name, command)
        self.wait_until(lambda: http("GET", f"{self.platform}/healthz")[0] == 200, "a healthy /healthz")

    def stop(self) -> dict[str, int]:
        try:
            return self.deployment.stop()
        finally:
            subprocess.run(["bash", str(SERVICES_SCRIPT), "stop", str(self.services_dir)], check=False)

    def _staff_token(self) -> str:
        env = {**self.env, "DJANGO_SUPERUSER_PASSWORD": secrets.token_urlsafe(16)}
        run_shell("python manage.py createsuperuser --noinput --username staff --email staff@example.com", ROOT, env)
        output = run_shell("python manage.py drf_create_token staff", ROOT, self.env)
        match = re.search(r"token ([0-9a-f]{40})", output)
        assert match, output
        return match.group(1)

    def wait_until(self, check: Any, what: str, timeout: float = 90) -> Any:
        return wait_until(check, what, self.deployment, timeout=timeout)

    def get(self, path: str) -> tuple[int, Any]:
        return http("GET", f"{self.platform}{path}", token=self.token)

    def install(self, eshop_id: int, *, orders: int = 0, invoices: int = 0, wait: bool = True) -> None:
        """An e-shop installed (as Shoptet does it) and, unless told otherwise, onboarded and imported."""
        self.fake.add_eshop(eshop_id, orders=orders, invoices=invoices)
        status, body = self.fake.install(eshop_id, f"{self.platform}/shoptet/install/")
        assert status == 200, body
        if wait:
            self.wait_until(lambda: self.jobs(eshop_id, "completed") >= 2, "onboarding and the initial import")

    def jobs(self, eshop_id: int, status: str) -> int:
        """How many of the e-shop's snapshot jobs are in `status` (0 while the API does not answer)."""
        answer, jobs = self.get(f"/api/v1/installations/{eshop_id}/jobs/?mode=snapshot&status={status}")
        return int(jobs["count"]) if answer == 200 and isinstance(jobs, dict) else 0

    def count(self, path: str) -> int | None:
        answer, page = self.get(path)
        return int(page["count"]) if answer == 200 and isinstance(page, dict) else None

    def query(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        """Read the stack's database directly (the test's own view, not the platform's)."""
        url = self.database_url.replace("postgres://", "postgresql://", 1)
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as connection:
            return connection.execute(sql, params).fetchall()

    # -- faults ---------------------------------------------------------------------------------------
    def restart_postgres(self) -> float:
        """`pg_ctl restart -m fast`: every connection is cut; returns the seconds it took."""
        folder = self.services_dir / "pg"
        command = [str(PG_BIN / "pg_ctl"), "-D", str(folder / "data"), "-l", str(folder / "postgres.log")]
        user = _pg_os_user()
        prefix = ["runuser", "-u", user, "--"] if user else []
        started = time.monotonic()
        # The new server inherits pg_ctl's output: no pipe, or waiting for its end would last as long as it.
        subprocess.run(
            [*prefix, *command, "-m", "fast", "-w", "restart"],
            cwd="/",
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return time.monotonic() - started

    def stop_redis(self) -> None:
        redis.Redis(port=self.redis_port, socket_timeout=5).shutdown(nosave=True)

    def start_redis(self) -> None:
        folder = self.services_dir / "redis"
        command = (
            f"redis-server --port {self.redis_port} --bind 127.0.0.1 --save '' --appendonly no --daemonize yes "
            f"--pidfile {folder / 'redis.pid'} --logfile {folder / 'redis.log'} --dir {folder}"
        )
        subprocess.run(shlex.split(command), check=True)
        client = redis.Redis(port=self.redis_port, socket_timeout=1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.1)
        raise AssertionError("Redis did not come back")
