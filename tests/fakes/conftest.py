"""The fake's self-tests need no Django: neutralise the project-wide autouse fixtures that touch the database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    """Overrides the shared fixture of the same name: these tests use no Django cache."""
    yield
