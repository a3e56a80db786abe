"""Shoptet's leaky bucket: the client reads `X-RateLimit-Bucket-Filling` and slows down before a 429."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from installations.models import Installation
from shoptet_api import bucket
from shoptet_api.client import ShoptetClient
from tests.fakes.shoptet import FakeShoptet

CAPACITY = 20
LEAK = 10.0


@pytest.fixture
def small_bucket(fake_shoptet: FakeShoptet) -> FakeShoptet:
    """Shoptet's bucket at a tenth of its size, leaking at its real rate: a few dozen calls fill it."""
    fake_shoptet.enforce_bucket = True
    fake_shoptet.bucket_capacity = CAPACITY
    fake_shoptet.bucket_leak_per_second = LEAK
    return fake_shoptet


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("150/200", (150.0, 200.0)),
        (" 12.5 / 200 ", (12.5, 200.0)),
        ("0/200", (0.0, 200.0)),
        ("200/200", (200.0, 200.0)),
        ("", None),
        (None, None),
        ("150", None),
        ("150/0", None),
        ("-1/200", None),
        ("a/b", None),
        ("150/200/300", None),
    ],
)
def test_filling_header_is_read_or_ignored(header: str | None, expected: tuple[float, float] | None) -> None:
    assert bucket.parse_filling(header) == expected


@given(st.text(max_size=40))
def test_any_filling_header_is_read_without_an_error(header: str) -> None:
    filling = bucket.parse_filling(header)

    assert filling is None or (filling[0] >= 0 and filling[1] > 0)


def test_a_reading_leaks_at_shoptets_rate() -> None:
    reading = bucket.Reading(used=190, size=200, at=1000.0)

    assert reading.pause(1000.0) == pytest.approx((190 - 150) / LEAK)
    assert reading.pause(1002.0) == pytest.approx((170 - 150) / LEAK)
    assert reading.pause(1004.0) == 0.0
    assert bucket.Reading(used=100, size=200, at=1000.0).pause(1000.0) == 0.0


@pytest.mark.django_db
def test_a_burst_slows_down_instead_of_filling_the_bucket(
    installation: Installation, small_bucket: FakeShoptet
) -> None:
    calls = 3 * CAPACITY
    client = ShoptetClient(installation)

    started = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: client.get_eshop(), range(calls)))
    elapsed = time.monotonic() - started

    stats = small_bucket.stats(installation.eshop_id)
    assert stats["bucket_refused"] == 0
    assert stats["requests"]["GET /api/eshop"] == calls
    assert stats["max_bucket_level"] <= CAPACITY
    # Everything beyond the bucket's high-water mark had to wait for drops to leak away.
    assert elapsed >= (calls - CAPACITY) / LEAK


@pytest.mark.django_db
def test_a_full_bucket_of_one_e_shop_does_not_slow_another(
    installation: Installation, other_installation: Installation, small_bucket: FakeShoptet
) -> None:
    client = ShoptetClient(installation)
    for _ in range(CAPACITY):
        client.get_eshop()

    assert bucket.pause_before_request(installation.eshop_id) > 0
    assert bucket.pause_before_request(other_installation.eshop_id) == 0.0
    started = time.monotonic()
    ShoptetClient(other_installation).get_eshop()
    assert time.monotonic() - started < 1.0
    assert small_bucket.stats(other_installation.eshop_id)["bucket_refused"] == 0


def fill(fake: FakeShoptet, installation: Installation, level: float) -> None:
    """As if earlier calls (of this addon, unseen by this process) had left the bucket at `level`."""
    with fake.state.lock:
        eshop = fake.eshops[installation.eshop_id]
        eshop.bucket_level, eshop.bucket_updated = level, fake.clock.time()


@pytest.mark.django_db
def test_the_reading_is_shared_by_every_client_of_the_e_shop(
    installation: Installation, small_bucket: FakeShoptet
) -> None:
    fill(small_bucket, installation, CAPACITY - 2)
    ShoptetClient(installation).get_eshop()  # answered "19/20"

    reading = bucket.reading(installation.eshop_id)

    assert reading is not None
    assert (reading.used, reading.size) == (CAPACITY - 1, CAPACITY)
    # A new client (another worker) waits for the same bucket before its first call: 4 drops at 10 per second.
    started = time.monotonic()
    ShoptetClient(Installation.objects.get(pk=installation.pk)).get_eshop()
    assert time.monotonic() - started >= 0.3
    assert small_bucket.stats(installation.eshop_id)["bucket_refused"] == 0


@pytest.mark.django_db
def test_a_429_from_a_full_bucket_is_still_honoured(installation: Installation, small_bucket: FakeShoptet) -> None:
    # Another addon's calls (not seen by this client) filled the bucket: Shoptet refuses with a Retry-After date.
    fill(small_bucket, installation, CAPACITY)

    ShoptetClient(installation).get_eshop()

    stats = small_bucket.stats(installation.eshop_id)
    assert stats["bucket_refused"] == 1
    assert stats["requests"]["GET /api/eshop"] == 2
