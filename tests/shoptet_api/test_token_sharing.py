"""Eight worker processes share one e-shop's tokens and stay within Shoptet's limits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from installations.models import Installation
from tests.fakes.shoptet import FakeShoptet

pytestmark = pytest.mark.django_db(transaction=True)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 8


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs the shared Redis of `make test`")
def test_eight_processes_mint_few_tokens_and_keep_three_in_flight(
    installation: Installation, fake_shoptet: FakeShoptet
) -> None:
    # Slow answers make the processes overlap, so the limits are really contended.
    fake_shoptet.add_fault("GET", r"/api/eshop", 0, delay=0.05, times=10_000)
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SHOPTET_CLIENT_ID": settings.SHOPTET_CLIENT_ID,
        "SHOPTET_CLIENT_SECRET": settings.SHOPTET_CLIENT_SECRET,
        "SHOPTET_PARTNER_URL": settings.SHOPTET_PARTNER_URL,
        "SHOPTET_API_URL": settings.SHOPTET_API_URL,
        "PUBLIC_URL": settings.PUBLIC_URL,
        "DEBUG": "true",
        "SECRET_KEY": settings.SECRET_KEY,
        "TOKEN_ENCRYPTION_KEYS": ",".join(settings.TOKEN_ENCRYPTION_KEYS),
    }
    command = [sys.executable, "-m", "tests.shoptet_api.worker_process", str(installation.eshop_id), "4", "5"]

    workers = [subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stderr=subprocess.PIPE) for _ in range(PROCESSES)]
    outputs = [worker.communicate(timeout=120)[1].decode() for worker in workers]

    assert [worker.returncode for worker in workers] == [0] * PROCESSES, outputs
    assert not [line for output in outputs for line in output.splitlines() if "worker failure" in line]
    stats = fake_shoptet.stats(installation.eshop_id)
    assert stats["tokens_minted"] == 1
    assert stats["max_valid_tokens"] <= 5
    assert stats["max_concurrent_per_token"] == 3
    assert stats["rate_limited"] == 0
    assert fake_shoptet.request_count("GET", r"/api/eshop") == PROCESSES * 4 * 5
