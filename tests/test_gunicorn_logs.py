"""The web process as deployed (gunicorn with config.gunicorn) writes no session token in any log line."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from django.conf import settings

from addon import auth
from tests.addon.conftest import tampered
from tests.deployment import commands

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status_of(url: str) -> int:
    # The page's own URL as the Referer, as a browser sends it for the next page.
    request = urllib.request.Request(url, headers={"Referer": url})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


# The project's access format leaves the query string out; the mask must hold for one that puts it back.
WITH_QUERY = " --access-logformat '\"%(r)s\" %(s)s %({referer}i)s'"


@pytest.mark.parametrize("access_format", ["", WITH_QUERY], ids=["project-format", "format-with-query"])
def test_gunicorn_access_and_application_logs_hold_no_token(tmp_path: Path, access_format: str) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "DEBUG": "0",
        "SECRET_KEY": "gunicorn-log-test-only-0123456789-abcdefghijklmnopqrstuvwxyz",
        # The suite's keys, so that a token issued here is genuine to the web process.
        "TOKEN_ENCRYPTION_KEYS": ",".join(settings.TOKEN_ENCRYPTION_KEYS),
        "ALLOWED_HOSTS": "127.0.0.1",
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "SHOPTET_CLIENT_ID": "test-client",
        "SHOPTET_CLIENT_SECRET": "test-secret",
        "SHOPTET_PARTNER_URL": "http://127.0.0.1:9/partner",
        # An empty database: a page that reaches it answers 500.
        "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}",
        "REDIS_URL": "",
    }
    admin = auth.Admin(
        eshop_id=222651,
        installation_id=1,
        email="jana@eshop.example",
        name="Jana",
        language="en",
        session_id="gunicorn-log-test",
        logged_in_at=int(time.time()),
    )
    token = auth.issue_token(admin)
    base = f"http://127.0.0.1:{port}"
    query = urlencode({"eshopId": "222651", "language": "en", "t": token})
    output = tmp_path / "web.log"
    with output.open("wb") as log:
        command = [*commands.WEB[:-1], commands.WEB[-1] + access_format]
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while status_of(f"{base}/healthz") == 0 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        answered = [
            status_of(f"{base}/addon/settings/overview/?{query.replace(quote(token, safe=''), tampered(token))}"),
            status_of(f"{base}/addon/settings/nowhere/?{query}"),
            status_of(f"{base}/addon/settings/overview/?{query}"),
        ]
    finally:
        process.terminate()
        process.wait(timeout=20)

    assert answered == [403, 404, 500], output.read_text(errors="replace")
    logged = output.read_text(errors="replace")
    access_line = (
        "GET /addon/settings/overview/?eshopId=222651&language=en&t=[masked] HTTP/1.1"
        if access_format
        else ('"GET /addon/settings/overview/ HTTP/1.1" 403')
    )
    assert access_line in logged  # gunicorn's access log
    assert "Internal Server Error: /addon/settings/overview/" in logged  # Django's, through our handler
    for secret in (token, tampered(token), quote(token, safe=""), token[-24:]):
        assert secret not in logged
