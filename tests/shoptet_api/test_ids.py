"""The one e-shop id parser: ASCII digits only, whatever Python's `int()` would accept."""

from __future__ import annotations

import pytest

from shoptet_api.ids import InvalidEshopId, parse_eshop_id
from tests.conftest import NOT_ESHOP_IDS as SHARED_NOT_ESHOP_IDS

NOT_ESHOP_IDS = [
    *SHARED_NOT_ESHOP_IDS,
    "",
    " 1",
    "1 ",
    "1\n",
    "1_000",
    "0",
    "000",
    True,
    False,
    10**18,
    -1,
    0,
    1000.0,
    None,
    b"1",
    [1],
]


@pytest.mark.parametrize("value", NOT_ESHOP_IDS, ids=repr)
def test_what_is_not_an_eshop_id_is_refused(value: object) -> None:
    with pytest.raises(InvalidEshopId):
        parse_eshop_id(value)


def test_the_refusal_is_a_value_error() -> None:
    assert issubclass(InvalidEshopId, ValueError)


@pytest.mark.parametrize(
    ("value", "eshop_id"),
    [("1", 1), ("222651", 222651), (222651, 222651), ("9" * 18, 10**18 - 1), (10**18 - 1, 10**18 - 1), ("007", 7)],
)
def test_ascii_digits_and_ints_are_eshop_ids(value: object, eshop_id: int) -> None:
    assert parse_eshop_id(value) == eshop_id
