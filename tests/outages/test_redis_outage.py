"""Redis down: the REST API's reads need only PostgreSQL, so they keep answering (throttling fails open)."""

from __future__ import annotations

import urllib.parse

import pytest

from tests.outages.stack import Stack

pytestmark = pytest.mark.smoke

ESHOP_ID = 881003
ORDERS = 3
INVOICES = 2
ROUNDS = 3


def test_rest_reads_answer_while_redis_is_down(stack: Stack) -> None:
    stack.install(ESHOP_ID, orders=ORDERS, invoices=INVOICES)
    code = next(iter(stack.fake.eshop(ESHOP_ID).orders))
    api = f"/api/v1/installations/{ESHOP_ID}"
    paths = [
        "/api/v1/installations/",
        f"{api}/",
        f"{api}/orders/",
        f"{api}/orders/{urllib.parse.quote(code, safe='')}/",
        f"{api}/invoices/",
        f"{api}/jobs/",
        f"/api/v1/webhook-deliveries/?eshop_id={ESHOP_ID}",
    ]

    stack.stop_redis()
    try:
        answers = [(path, *stack.get(path)) for _ in range(ROUNDS) for path in paths]
    finally:
        stack.start_redis()

    assert [(path, status) for path, status, _ in answers] == [(path, 200) for _ in range(ROUNDS) for path in paths]
    bodies = {path: body for path, _, body in answers}
    assert isinstance(bodies[f"{api}/orders/"], dict) and bodies[f"{api}/orders/"]["count"] == ORDERS
    assert isinstance(bodies[f"{api}/"], dict) and bodies[f"{api}/"]["eshop_id"] == ESHOP_ID
    # Back up, the API is throttled again and still answers.
    assert stack.get(f"{api}/orders/")[0] == 200
