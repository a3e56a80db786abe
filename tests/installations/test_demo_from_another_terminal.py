"""`manage.py install_demo_eshop` from another terminal, where PORT and PUBLIC_URL are not those of `make run`:
it finds the running platform in the file `make run` writes, or is told with `--platform-url`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from installations import demo
from installations.models import Installation
from tests.fakes.shoptet import FakeShoptet

pytestmark = pytest.mark.django_db(transaction=True)

# What a terminal without `make run`'s PORT computes: nothing listens there.
ELSEWHERE = "http://127.0.0.1:9"


@pytest.fixture
def another_terminal(fake_shoptet: FakeShoptet, live_server: Any, settings: Any, tmp_path: Path) -> str:
    """The platform served for real at the returned URL, while this process's settings point elsewhere."""
    fake_shoptet.add_eshop(demo.DEMO_ESHOP_ID, orders=1, invoices=1)
    settings.DEBUG = True
    settings.PORT = 9
    settings.PUBLIC_URL = ELSEWHERE
    settings.RUN_STATE_FILE = tmp_path / "run.json"
    return str(live_server.url)


def served(live_url: str, settings: Any) -> None:
    """The live server's process is this one: it must answer as the platform `make run` started."""
    settings.PUBLIC_URL = live_url


def test_the_command_finds_the_platform_make_run_wrote_down(
    another_terminal: str, fake_shoptet: FakeShoptet, settings: Any
) -> None:
    state = {"pid": os.getpid(), "platform_url": another_terminal, "fake_url": fake_shoptet.url}
    settings.RUN_STATE_FILE.write_text(json.dumps(state))
    target = demo.default_platform_url()
    served(another_terminal, settings)

    call_command("install_demo_eshop")

    assert target == another_terminal
    assert Installation.objects.get().eshop_id == demo.DEMO_ESHOP_ID


def test_platform_url_names_it_and_a_stale_file_is_ignored(
    another_terminal: str, fake_shoptet: FakeShoptet, settings: Any
) -> None:
    # A `make run` killed outright leaves its file behind, naming a process that is gone.
    state = {"pid": 2**22 + 12345, "platform_url": "http://127.0.0.1:10", "fake_url": "http://127.0.0.1:11"}
    settings.RUN_STATE_FILE.write_text(json.dumps(state))
    assert demo.default_platform_url() == ELSEWHERE
    served(another_terminal, settings)

    call_command("install_demo_eshop", platform_url=another_terminal, fake_url=fake_shoptet.url)

    assert Installation.objects.get().eshop_id == demo.DEMO_ESHOP_ID
