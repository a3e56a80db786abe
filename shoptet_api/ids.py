"""E-shop ids as they arrive from outside: the one parser every surface uses.

Python's `str.isdigit()` and `int()` accept far more than ASCII digits: `int()` reads Arabic-Indic
digits (U+0661 U+0660 ...) as 1000001, and `"²".isdigit()` is true while `int("²")` raises. An e-shop
id from a URL, a form or a JSON body is therefore read here only, so that every surface agrees on it.
"""

from __future__ import annotations

import re

# Shoptet's ids are positive integers; 18 digits keep every accepted value inside PostgreSQL's bigint.
MAX_DIGITS = 18
_ASCII_DIGITS = re.compile(rf"[0-9]{{1,{MAX_DIGITS}}}")


class InvalidEshopId(ValueError):
    """The value is not an e-shop id: not 1 to 18 ASCII digits (or such an int), or zero."""


def parse_eshop_id(value: object) -> int:
    """The e-shop id in `value`: a str of ASCII digits or an int (JSON), never a bool, sign, space or float."""
    if isinstance(value, bool):  # JSON `true` is an int to Python; it is not e-shop 1.
        raise InvalidEshopId("an e-shop id is a number, not true or false")
    if isinstance(value, int):
        digits = str(value)
    elif isinstance(value, str):
        digits = value
    else:
        raise InvalidEshopId("an e-shop id is a number")
    # fullmatch, not match: `$` would also accept a trailing newline.
    if not _ASCII_DIGITS.fullmatch(digits):
        raise InvalidEshopId(f"an e-shop id is 1 to {MAX_DIGITS} digits 0-9")
    eshop_id = int(digits)
    if eshop_id == 0:
        raise InvalidEshopId("an e-shop id is a positive number")
    return eshop_id
