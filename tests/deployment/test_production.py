"""The production stage: the deployment of docker-compose.yml, started from requirements.txt alone.

A virtualenv is built the way the Dockerfile builds the image (the tree as `COPY . .` copies it, then
`pip install -r requirements.txt`), and nothing from the dev requirements is in it. Every compose service
runs with its own command line against the throwaway PostgreSQL and Redis and a fake Shoptet; the test
then drives the platform over HTTP only, as Shoptet and partner staff do.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from cryptography.fernet import Fernet

from tests.deployment import commands
from tests.deployment.runtime import (
    PRODUCT_PACKAGES,
    Deployment,
    build_runtime_venv,
    copy_tree_as_image,
    dockerfile_env,
    http,
    run_shell,
    wait_until,
)
from tests.fakes.shoptet import FakeShoptet
from tests.test_make_run import free_ports

pytestmark = pytest.mark.smoke

ESHOP_ID = 777001
MAKE_RUN_ESHOP_ID = 777002
REDIS_DB = 7
IMPORT_EVERY_MODULE = """
import importlib, json, os, pkgutil, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()
imported = []
for package in {packages!r}:
    imported.append(importlib.import_module(package).__name__)
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        imported.append(importlib.import_module(info.name).__name__)
print(json.dumps(imported))
"""


def services_url(variable: str) -> str:
    value = os.environ.get(variable, "")
    if not value:
        pytest.fail(f"{variable} is not set: `make test` starts PostgreSQL and Redis for this stage")
    return value


def fresh_database(name: str) -> str:
    """A database of its own on the throwaway server, so the suite's test database stays untouched."""
    url = urllib.parse.urlsplit(services_url("DATABASE_URL"))
    with psycopg.connect(url._replace(scheme="postgresql").geturl(), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return url._replace(path=f"/{name}").geturl()


def fresh_redis(db: int) -> str:
    url = urllib.parse.urlsplit(services_url("REDIS_URL"))
    stage_url = url._replace(path=f"/{db}").geturl()
    redis.Redis.from_url(stage_url).flushdb()
    return stage_url


@pytest.fixture(scope="module")
def fake(fake_shoptet_server: FakeShoptet) -> FakeShoptet:
    """The suite's fake Shoptet; this module's e-shops have ids of their own."""
    return fake_shoptet_server


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory, fake: FakeShoptet) -> Iterator[dict[str, object]]:
    """The app tree, its runtime virtualenv and the environment every service gets."""
    base = tmp_path_factory.mktemp("deployment")
    app = copy_tree_as_image(base / "app")
    venv = base / "venv"
    (web_port,) = free_ports(1)
    env = {
        **dockerfile_env(),
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "TMPDIR": str(base),
        "PORT": str(web_port),
        # What a partner's .env holds in production.
        "DATABASE_URL": fresh_database("deployment_stage"),
        "REDIS_URL": fresh_redis(REDIS_DB),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PUBLIC_URL": f"http://127.0.0.1:{web_port}",
        "SHOPTET_CLIENT_ID": fake.client_id,
        "SHOPTET_CLIENT_SECRET": fake.client_secret,
        "SHOPTET_PARTNER_URL": fake.partner_url,
        "SHOPTET_API_URL": fake.api_url,
        "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    }
    build_runtime_venv(venv, app, env)
    run_shell(commands.COLLECT_STATIC, app, env)
    logs = Path(os.environ.get("TEST_ARTIFACTS_DIR") or base) / "deployment"
    yield {"app": app, "venv": venv, "env": env, "logs": logs}


def test_the_runtime_virtualenv_holds_only_what_requirements_install(stage: dict[str, object]) -> None:
    venv = stage["venv"]
    assert isinstance(venv, Path)
    for dev_only in ("pytest", "hypothesis", "playwright", "mypy"):
        assert not list((venv / "lib").glob(f"python*/site-packages/{dev_only}")), dev_only


def test_every_product_module_imports_in_the_runtime_virtualenv(stage: dict[str, object]) -> None:
    app, env = stage["app"], stage["env"]
    assert isinstance(app, Path) and isinstance(env, dict)
    code = IMPORT_EVERY_MODULE.format(packages=PRODUCT_PACKAGES)
    imported = set(json.loads(run_shell(f"python -c {shlex.quote(code)}", app, env).splitlines()[-1]))
    for package in PRODUCT_PACKAGES:
        for module in ("models", "tasks", "admin", "apps"):
            if (app / package / f"{module}.py").exists():
                assert f"{package}.{module}" in imported
    assert {"config.settings", "config.urls", "config.wsgi", "config.celery", "config.gunicorn"} <= imported
    commands_dirs = list(app.glob("*/management/commands/*.py"))
    assert commands_dirs
    for path in commands_dirs:
        if path.stem != "__init__":
            assert ".".join(path.relative_to(app).with_suffix("").parts) in imported


def test_the_compose_services_install_onboard_process_a_webhook_and_import_a_snapshot(
    stage: dict[str, object], fake: FakeShoptet
) -> None:
    app, env, logs = stage["app"], stage["env"], stage["logs"]
    assert isinstance(app, Path) and isinstance(env, dict) and isinstance(logs, Path)
    deployment = Deployment(app, env, logs)
    try:
        for name in commands.ONE_OFF:
            deployment.run_to_end(name, commands.SERVICES[name])
        token = staff_token(app, env)
        for name, command in commands.SERVICES.items():
            if name not in commands.ONE_OFF:
                deployment.start(name, command)
        platform = env["PUBLIC_URL"]
        wait_until(lambda: http("GET", f"{platform}/healthz")[0] == 200, "a healthy /healthz", deployment)
        assert http("GET", f"{platform}/healthz")[1] == {"database": "ok", "broker": "ok"}

        drive_the_platform(platform, token, fake, deployment)

        deployment.assert_running()
    finally:
        exit_codes = deployment.stop()
    assert exit_codes == dict.fromkeys(exit_codes, 0), exit_codes


def test_make_run_in_production_mode_serves_and_processes_from_the_runtime_virtualenv(
    stage: dict[str, object], fake: FakeShoptet
) -> None:
    """`make run` with PostgreSQL and Redis set: scripts/run.py, run by the runtime virtualenv's Python."""
    app, stage_env, logs = stage["app"], stage["env"], stage["logs"]
    assert isinstance(app, Path) and isinstance(stage_env, dict) and isinstance(logs, Path)
    env = {**stage_env, "DATABASE_URL": fresh_database("deployment_make_run"), "REDIS_URL": fresh_redis(REDIS_DB + 1)}
    deployment = Deployment(app, env, logs)
    try:
        supervisor = deployment.start("make-run", ["python", "scripts/run.py"])
        platform = env["PUBLIC_URL"]
        wait_until(lambda: http("GET", f"{platform}/healthz")[0] == 200, "a healthy /healthz", deployment, timeout=120)
        token = staff_token(app, env)
        install_and_receive_an_order(platform, token, fake, deployment, MAKE_RUN_ESHOP_ID)
        assert "relay_deliveries[" not in supervisor.log.read_text(errors="replace")
    finally:
        exit_codes = deployment.stop()
    assert exit_codes == {"make-run": 0}


def install_and_receive_an_order(
    platform: str, token: str, fake: FakeShoptet, deployment: Deployment, eshop_id: int
) -> None:
    api = f"{platform}/api/v1/installations/{eshop_id}"
    fake.add_eshop(eshop_id, orders=2, invoices=1)
    status, body = fake.install(eshop_id, f"{platform}/shoptet/install/")
    assert status == 200, body
    wait_until(
        lambda: bool(http("GET", f"{api}/", token=token)[1].get("webhooks_registered")), "onboarding", deployment
    )
    code = fake.create_order(eshop_id)
    order_url = f"{api}/orders/{urllib.parse.quote(code, safe='')}/"
    wait_until(lambda: http("GET", order_url, token=token)[0] == 200, "the webhook's order row", deployment)


def staff_token(app: Path, env: dict[str, str]) -> str:
    password_env = {**env, "DJANGO_SUPERUSER_PASSWORD": secrets.token_urlsafe(16)}
    run_shell(
        "python manage.py createsuperuser --noinput --username staff --email staff@example.com", app, password_env
    )
    output = run_shell("python manage.py drf_create_token staff", app, env)
    match = re.search(r"token ([0-9a-f]{40})", output)
    assert match, output
    return match.group(1)


def drive_the_platform(platform: str, token: str, fake: FakeShoptet, deployment: Deployment) -> None:
    api = f"{platform}/api/v1/installations/{ESHOP_ID}"
    fake.add_eshop(ESHOP_ID, orders=5, invoices=3)

    status, body = fake.install(ESHOP_ID, f"{platform}/shoptet/install/")
    assert status == 200, body

    def onboarded() -> bool:
        status, installation = http("GET", f"{api}/", token=token)
        return status == 200 and bool(installation["webhooks_registered"])

    wait_until(onboarded, "onboarding (webhooks registered)", deployment)

    def initial_import_done() -> bool:
        _, jobs = http("GET", f"{api}/jobs/", token=token)
        done = {job["resource"] for job in jobs["results"] if job["status"] == "completed"}
        return {"orders", "invoices"} <= done

    wait_until(initial_import_done, "the initial snapshot imports", deployment, timeout=120)
    assert http("GET", f"{api}/orders/", token=token)[1]["count"] == 5
    assert http("GET", f"{api}/invoices/", token=token)[1]["count"] == 3

    # A new order in the e-shop: Shoptet sends a signed order:create, which ends as an order row.
    code = fake.create_order(ESHOP_ID)
    order_url = f"{api}/orders/{urllib.parse.quote(code, safe='')}/"
    order = wait_until(
        lambda: http("GET", order_url, token=token)[1] if http("GET", order_url, token=token)[0] == 200 else None,
        "the webhook's order row",
        deployment,
    )
    assert order["code"] == code
    _, deliveries = http(
        "GET", f"{platform}/api/v1/webhook-deliveries/?eshop_id={ESHOP_ID}&event=order:create", token=token
    )
    assert [(d["signature_valid"], d["status"]) for d in deliveries["results"]] == [(True, "processed")]

    # A snapshot import that staff start, through the REST API.
    status, job = http("POST", f"{api}/sync/", token=token, body={"resource": "orders", "mode": "snapshot"})
    assert status == 202, job

    def snapshot_completed() -> bool:
        _, jobs = http("GET", f"{api}/jobs/", token=token)
        return any(j["id"] == job["id"] and j["status"] == "completed" for j in jobs["results"])

    wait_until(snapshot_completed, "the staff snapshot import", deployment, timeout=120)
    assert http("GET", f"{api}/orders/", token=token)[1]["count"] == 6
