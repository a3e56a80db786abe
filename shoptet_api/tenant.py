"""What the API layer knows of an e-shop: the few attributes of an installation that a call to Shoptet needs."""

from __future__ import annotations

from typing import Protocol

from django.dispatch import Signal


class Tenant(Protocol):
    """An installation as `shoptet_api` sees it; `installations.models.Installation` is the one in use."""

    @property
    def eshop_id(self) -> int: ...

    @property
    def oauth_token(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def is_active(self) -> bool: ...


# Sent with `tenant` and `error` (AddonSuspended or AddonNotInstalled) when getAccessToken reports the addon
# suspended or uninstalled. The API layer writes no model: the tenant app's receiver changes the status.
addon_refused = Signal()
