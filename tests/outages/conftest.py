from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.shoptet import FakeShoptet
from tests.outages.stack import Stack


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory, fake_shoptet_server: FakeShoptet) -> Iterator[Stack]:
    """One platform for the package's tests: each test restores whatever server it stopped or restarted."""
    stack = Stack(tmp_path_factory.mktemp("outages"), fake_shoptet_server)
    try:
        stack.start()
        yield stack
        stack.deployment.assert_running()
    finally:
        stack.stop()
