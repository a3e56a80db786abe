"""Demo mode: install the fake Shoptet's demo e-shop the way Shoptet would, through the install callback."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import requests
from django.conf import settings

DEMO_ESHOP_ID = 1000001


class DemoUnavailable(Exception):
    """No fake Shoptet answers at SHOPTET_API_URL: the platform is not running in demo mode."""


@dataclass(frozen=True)
class DemoInstall:
    status: int
    body: str

    @property
    def succeeded(self) -> bool:
        return self.status == 200


def demo_available() -> bool:
    return settings.DEBUG


def running_platform() -> dict[str, str]:
    """The URLs `make run` wrote into RUN_STATE_FILE (`platform_url`, `fake_url`) while it is running, else {}."""
    try:
        state = json.loads(settings.RUN_STATE_FILE.read_text())
        os.kill(int(state["pid"]), 0)  # a `make run` killed outright leaves its file behind
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {key: str(state[key]) for key in ("platform_url", "fake_url") if state.get(key)}


def default_fake_url() -> str:
    """Where `make run` started the fake: as it wrote down, the platform's Shoptet settings, else the next port."""
    if running := running_platform().get("fake_url"):
        return running
    if settings.SHOPTET_PARTNER_URL:
        return settings.SHOPTET_API_URL
    return f"http://127.0.0.1:{settings.PORT + 1}"


def default_platform_url() -> str:
    """The platform the fake must call: the one `make run` wrote down, else PUBLIC_URL (which follows PORT)."""
    return running_platform().get("platform_url") or settings.PUBLIC_URL


def install_demo_eshop(
    *, eshop_id: int = DEMO_ESHOP_ID, fake_url: str | None = None, platform_url: str | None = None
) -> DemoInstall:
    """Ask the fake Shoptet to install the demo e-shop: it issues a code and calls our install URL."""
    if not demo_available():
        raise DemoUnavailable("The demo e-shop exists only in demo mode (DEBUG on, the fake Shoptet running).")
    fake_url = fake_url or default_fake_url()
    # The same path as tokens.install_redirect_uri(), on the running platform's base URL.
    install_url = f"{(platform_url or default_platform_url()).rstrip('/')}/shoptet/install/"
    try:
        response = requests.post(
            f"{fake_url}/_fake/eshops/{eshop_id}/install",
            json={"installUrl": install_url},
            timeout=15,
        )
    except requests.RequestException as error:
        raise DemoUnavailable(f"The fake Shoptet at {fake_url} does not answer; is `make run` running?") from error
    if response.status_code != 200:
        raise DemoUnavailable(f"The fake Shoptet refused the demo install (HTTP {response.status_code}).")
    answer = response.json()
    return DemoInstall(status=int(answer.get("status") or 0), body=str(answer.get("body") or ""))
