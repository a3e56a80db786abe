"""Whatever anyone posts to the webhook endpoint: never a 500, and nothing stored beyond one bounded row."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from installations.models import Installation
from tests.webhooks.conftest import ENDPOINT, PRAGUE, shoptet_time
from webhooks import intake, signature
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db

ANSWERS = {200, 400, 401, 404, 413, 429}
DEPTH = 10_000
# Header values as a WSGI server hands them over: latin-1 text.
header_text = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=600)


def nested(depth: int, *, opener: bytes, closer: bytes, inner: bytes = b"1") -> bytes:
    return opener * depth + inner + closer * depth


deep_values = st.sampled_from(
    [
        nested(DEPTH, opener=b"[", closer=b"]"),
        nested(DEPTH, opener=b'{"a":', closer=b"}"),
        nested(DEPTH // 2, opener=b'[{"b":', closer=b"}]"),
    ]
)
# Digits that str.isdigit() accepts and int() may read: Arabic-Indic, fullwidth, superscript, NKo, bold maths.
UNICODE_DIGITS = ["\u0662\u0662\u0662", "\uff12\uff12\uff12\uff16\uff15\uff11", "\u00b2", "\u07c0", "\U0001d7d7"]
FULLWIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + digit) for digit in range(10)))
odd_strings = st.one_of(
    st.sampled_from(["\ud800", "\udfff", "x\ud83d", "\x00", "", *UNICODE_DIGITS]),
    st.integers(min_value=1, max_value=300_000).map(lambda n: "ž" * n),
    st.text(max_size=50),
)
eshop_ids = st.one_of(
    st.sampled_from(["__mine__", "__other__", "__mine_in_other_digits__"]),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**70),
    odd_strings,
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True),
)
events = st.one_of(st.sampled_from(["order:update", "order:massUpdate", "addon:uninstall", "evil:event"]), odd_strings)
created = st.one_of(
    st.integers(min_value=-400, max_value=400).map(
        lambda minutes: shoptet_time(datetime.now(PRAGUE) + timedelta(minutes=minutes))
    ),
    odd_strings,
    st.integers(),
)
instances = st.one_of(st.sampled_from(["X1", "2026000001", '["A", "B"]']), odd_strings, st.integers())
content_types = st.one_of(
    st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", "", "multipart/form-data"]),
    header_text,
)


@st.composite
def notifications(draw: st.DrawFn, installation: Installation) -> bytes:
    """A Shoptet-shaped JSON object, mostly valid, with some fields replaced, dropped or deeply nested."""
    fields: dict[str, Any] = {
        "eshopId": installation.eshop_id,
        "event": draw(st.sampled_from(["order:update", "order:massUpdate", "addon:uninstall", "order:teleport"])),
        "eventCreated": shoptet_time(),
        "eventInstance": "2026000001",
    }
    if draw(st.integers(0, 3)) == 0:
        fields["eshopId"] = installation.eshop_id + 1  # no such installation
    odd = {"eshopId": eshop_ids, "event": events, "eventCreated": created, "eventInstance": instances}
    for name, values in odd.items():
        if draw(st.integers(0, 3)) == 0:
            fields[name] = draw(values)
    if fields["eshopId"] == "__mine__":
        fields["eshopId"] = installation.eshop_id
    elif fields["eshopId"] == "__other__":
        fields["eshopId"] = installation.eshop_id + 1
    elif fields["eshopId"] == "__mine_in_other_digits__":
        fields["eshopId"] = str(installation.eshop_id).translate(FULLWIDTH)
    if draw(st.integers(0, 5)) == 0:
        del fields[draw(st.sampled_from(sorted(fields)))]
    body = json.dumps(fields, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 4)):
        return body
    # A deep structure spliced in as one field's value, where json.dumps could not have written it.
    name = draw(st.sampled_from(["eshopId", "event", "eventInstance", "payload"]))
    return b"{" + json.dumps(name).encode() + b":" + draw(deep_values) + b"," + body[1:]


@st.composite
def bodies(draw: st.DrawFn, installation: Installation) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind < 6:
        return draw(notifications(installation))
    if kind == 6:
        return draw(st.binary(max_size=2000))
    if kind == 7:
        return draw(deep_values)
    return b"{" * draw(st.integers(min_value=0, max_value=400_000))


@st.composite
def calls(draw: st.DrawFn, installation: Installation) -> dict[str, Any]:
    """The WSGI environ of one call: body, framing, signature header, content type, caller."""
    body = draw(bodies(installation))
    environ: dict[str, Any] = {"wsgi.input": io.BytesIO(body), "CONTENT_TYPE": draw(content_types)}
    framing = draw(st.sampled_from(["exact", "exact", "chunked", "chunked", "shorter", "longer", "garbage"]))
    if framing == "exact":
        environ["CONTENT_LENGTH"] = str(len(body))
    elif framing == "chunked":
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        environ["wsgi.input_terminated"] = True
    elif framing == "shorter":
        environ["CONTENT_LENGTH"] = str(max(0, len(body) - draw(st.integers(min_value=1, max_value=100))))
    elif framing == "longer":
        environ["CONTENT_LENGTH"] = str(len(body) + draw(st.integers(min_value=1, max_value=10**12)))
    else:
        environ["CONTENT_LENGTH"] = draw(st.sampled_from(["abc", "-1", "1e3", " 12", "٣"]))
    sig = draw(st.sampled_from(["valid", "valid", "valid", "none", "garbage", "hex"]))
    if sig == "valid":
        environ["HTTP_SHOPTET_WEBHOOK_SIGNATURE"] = signature.sign(body, installation.webhook_signature_key)
    elif sig == "garbage":
        environ["HTTP_SHOPTET_WEBHOOK_SIGNATURE"] = draw(header_text)
    elif sig == "hex":
        environ["HTTP_SHOPTET_WEBHOOK_SIGNATURE"] = draw(st.text("0123456789abcdef", min_size=40, max_size=40))
    environ["HTTP_USER_AGENT"] = draw(header_text)
    environ["HTTP_X_FORWARDED_FOR"] = draw(header_text)
    # A few callers come back often (and meet the rejection limit); the rest are new addresses.
    if draw(st.integers(0, 5)) == 0:
        environ["REMOTE_ADDR"] = draw(st.sampled_from(["", "unix:", "::1", "192.0.2.1"]))
    else:
        environ["REMOTE_ADDR"] = str(draw(st.ip_addresses()))
    return environ


def assert_bounded(delivery: WebhookDelivery, sent: bytes) -> None:
    prefix = django_settings.WEBHOOK_REJECTED_BODY_PREFIX
    kept = bytes(delivery.body)
    assert sent.startswith(kept)
    assert len(delivery.headers) <= len(intake.KEPT_HEADERS)
    assert all(len(value) <= intake.MAX_HEADER_LENGTH for value in delivery.headers.values())
    if delivery.status == WebhookDelivery.Status.RECEIVED:
        assert len(kept) <= django_settings.WEBHOOK_MAX_BODY_BYTES
    else:
        assert len(kept) <= prefix
        assert len(delivery.event_instance) <= prefix
        assert delivery.body_truncated == (delivery.body_length is None or len(kept) < delivery.body_length)


def test_nothing_posted_gives_a_500_or_stores_more_than_a_bounded_row(onboarded: Installation) -> None:
    client = Client()
    installations = Installation.objects.count()
    answered: set[int] = set()

    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(environ=calls(onboarded))
    def post_anything(environ: dict[str, Any]) -> None:
        sent = environ["wsgi.input"].getvalue()
        last = WebhookDelivery.objects.order_by("-pk").values_list("pk", flat=True).first() or 0

        response = client.generic("POST", ENDPOINT, **environ)

        assert response.status_code in ANSWERS, (response.status_code, response.content[:300])
        answered.add(response.status_code)
        new = list(WebhookDelivery.objects.filter(pk__gt=last))
        if response.status_code == 429:
            assert new == []
            assert response["Retry-After"].isdigit()
            return
        [delivery] = new
        assert response.json()["delivery"] == delivery.pk
        assert_bounded(delivery, sent)

    post_anything()
    assert Installation.objects.count() == installations
    assert answered == ANSWERS  # the calls reached every outcome, not only the first check
