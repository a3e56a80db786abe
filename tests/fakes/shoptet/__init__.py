"""A fake Shoptet (partner OAuth server, REST API, webhooks, async jobs) for tests and local demos.

    with FakeShoptet(client_id="test-client", client_secret="test-secret") as fake:
        fake.add_eshop(222651, orders=5, invoices=3)
        code = fake.issue_install_code(222651, redirect_uri="http://testserver/shoptet/install/")
        ...  # point SHOPTET_PARTNER_URL at fake.partner_url and SHOPTET_API_URL at fake.api_url

Stand-alone: `python -m tests.fakes.shoptet --port 8001 --demo --platform-url http://127.0.0.1:8000`
(control API under `/_fake/`, see `control.py`).
"""

from __future__ import annotations

from .fake import FakeShoptet
from .state import FakeEshop
from .webhooks import SIGNATURE_HEADER, sign

__all__ = ["SIGNATURE_HEADER", "FakeEshop", "FakeShoptet", "sign"]
