"""Generated requests to every REST endpoint: garbage tokens, content types, paths, query strings and bodies
(deep nesting, lone surrogates, Unicode digits, oversized). None is a 500, every error is in the error body,
and only a valid request starts a sync."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from django.test import Client
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token

from installations.models import Installation
from sync.models import SyncJob

pytestmark = pytest.mark.django_db

ROUTES = [
    "installations/",
    "installations/{eshop}/",
    "installations/{eshop}/orders/",
    "installations/{eshop}/orders/{code}/",
    "installations/{eshop}/invoices/",
    "installations/{eshop}/invoices/{code}/",
    "installations/{eshop}/jobs/",
    "installations/{eshop}/sync/",
    "webhook-deliveries/",
]
# Strings that have broken parsers and renderers before.
NASTY = [
    "\ud800",
    "\udfff",
    "\x00",
    "٣٤٥",
    "\uff11\uff12",
    "²",
    "-1",
    "1e999",
    "9" * 40,
    "../",
    "%00",
    "\u202e",
    "orders",
]
text = st.one_of(st.sampled_from(NASTY), st.text(max_size=20))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
SPECIAL_BODIES = [
    b"[" * 10_000 + b"]" * 10_000,
    b'{"resource": ' * 10_000 + b"1" + b"}" * 10_000,
    b'{"resource": "\\ud800", "mode": "snapshot"}',
    b'{"resource": "orders", "mode": "snapshot", "pad": "' + b"x" * 3_000_000 + b'"}',
    b"\xff\xfe\x00{",
    b'{"resource": "orders", "mode": "snapshot"}',
    b'{"resource": "invoices", "mode": "changes"}',
]
bodies = st.one_of(
    st.sampled_from(SPECIAL_BODIES),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=64),
)
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-16",
    "application/json; charset=nonsense",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "multipart/form-data",
    "",
    "application/json\x00",
]


@given(data=st.data())
@settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def fuzz(data: Any, *, token: str, eshop_id: int) -> None:
    route = data.draw(st.sampled_from(ROUTES))
    eshop = data.draw(st.one_of(st.just(str(eshop_id)), st.sampled_from(NASTY), st.text(min_size=1, max_size=8)))
    code = data.draw(text.filter(bool))
    path = "/api/v1/" + route.format(eshop=quote(eshop, safe="", errors="replace"), code=quote(code, errors="replace"))
    query = data.draw(
        st.dictionaries(st.sampled_from(["page", "page_size", "eshop_id", "event", "status", "mode"]), text)
    )
    authorization = data.draw(
        st.one_of(
            st.just(f"Token {token}"),
            st.just(f"Token {token}\x00"),
            st.sampled_from(["", "Token", "Token a b", "Bearer x", "Token \ud800"]),
            st.text(alphabet=st.characters(max_codepoint=255), max_size=30),
        )
    )
    method = data.draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS"]))
    body = data.draw(bodies) if method != "GET" else b""
    content_type = data.draw(st.sampled_from(CONTENT_TYPES))
    jobs_before = SyncJob.objects.count()

    response = Client().generic(
        method,
        f"{path}?{urlencode(query, errors='replace')}",
        body,
        content_type=content_type,
        HTTP_AUTHORIZATION=authorization,
    )

    assert response.status_code < 500, (method, path, query, authorization, content_type, body[:200])
    if response.status_code >= 400 and response.status_code != 405:
        assert set(response.json()) == {"error", "message", "details"}
    started = 1 if response.status_code == 202 else 0
    assert SyncJob.objects.count() == jobs_before + started


def test_no_generated_request_is_a_500_or_starts_a_sync_unasked(
    staff_client: Client, django_user_model: Any, tenants: tuple[Installation, Installation]
) -> None:
    token = Token.objects.get(user__username="staff").key
    installations_before = list(Installation.objects.order_by("pk").values_list("pk", "status", "updated_at"))

    fuzz(token=token, eshop_id=tenants[0].eshop_id)

    assert list(Installation.objects.order_by("pk").values_list("pk", "status", "updated_at")) == installations_before
