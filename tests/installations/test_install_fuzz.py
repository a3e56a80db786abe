"""Generated install callbacks: query strings, codes of every shape, methods and headers. None is a 500, none
installs anything, and a code that cannot be Shoptet's never reaches Shoptet's OAuth server."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from django.test import Client
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from installations.models import Installation, StatusChange
from installations.services import CODE_SHAPE, MAX_CODE_LENGTH
from tests.fakes.shoptet import FakeShoptet

pytestmark = pytest.mark.django_db

INSTALL_URL = "/shoptet/install/"
MALFORMED = "The install code is malformed."
MISSING = "The install request carries no code."
NASTY = ["\u0663\u0664", "\uff11", "\u00b2", "a b", "a\tb", "a\x00b", "\u202e", "A" * 255, "A" * 5000, "%", "+"]
raw_values = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(NASTY).map(lambda value: value.encode()),
    st.text(max_size=300).map(lambda value: value.encode("utf-8", "surrogatepass")),
)


@given(data=st.data())
@settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def fuzz(data: Any) -> None:
    names = data.draw(st.lists(st.sampled_from([b"code", b"code", b"eshopId", b"c\x00de", b""]), max_size=3))
    pairs = [(name, data.draw(raw_values)) for name in names]
    query = "&".join(f"{quote_from_bytes(name)}={quote_from_bytes(value)}" for name, value in pairs)
    method = data.draw(st.sampled_from(["GET", "GET", "POST", "HEAD", "PUT"]))
    headers = data.draw(
        st.dictionaries(
            st.sampled_from(
                ["HTTP_AUTHORIZATION", "CONTENT_TYPE", "HTTP_X_FORWARDED_FOR", "HTTP_ACCEPT", "HTTP_COOKIE"]
            ),
            st.text(alphabet=st.characters(max_codepoint=255), max_size=40),
        )
    )
    body = data.draw(st.binary(max_size=64))
    remote_addr = data.draw(st.sampled_from(["192.0.2.1", "2001:db8::1", "", "not-an-address"]))

    response = Client().generic(method, f"{INSTALL_URL}?{query}", body, REMOTE_ADDR=remote_addr, **headers)

    assert response.status_code < 500, (method, query, headers)
    assert response.status_code in (400, 405, 429)
    codes = [value.decode("utf-8", "replace") for name, value in pairs if name == b"code"]
    # Django takes the last of repeated parameters.
    plausible = method == "GET" and codes and len(codes[-1]) <= MAX_CODE_LENGTH and CODE_SHAPE.fullmatch(codes[-1])
    if method == "GET" and not plausible:
        # Refused by the check that runs before any exchange.
        assert response.json()["error"] in (MALFORMED, MISSING)


def test_no_generated_callback_is_a_500_installs_or_spends_an_exchange_on_junk(
    fake_shoptet: FakeShoptet, settings: Any
) -> None:
    # The limits are tested on their own; here every example must reach the code check.
    settings.INSTALL_CALLBACK_THROTTLE_PER_ADDRESS = settings.INSTALL_CALLBACK_THROTTLE_GLOBAL = 10_000

    fuzz()

    assert Installation.objects.count() == 0
    assert StatusChange.objects.count() == 0
