"""What every INSERT of the webhook endpoint pays for: the indexes of the delivery log, and who needs them."""

from __future__ import annotations

import pytest
from django.db import connection

from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db

# pk, delivery_received, delivery_due, delivery_entity, delivery_idempotency, delivery_eshop.
INDEXES_A_RECEIVED_ROW_ENTERS = 6


def _indexes() -> list[tuple[str, str | None]]:
    """(name, partial predicate or None) of every index on the delivery table, as PostgreSQL holds them."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT index_class.relname, pg_get_expr(pg_index.indpred, pg_index.indrelid)
            FROM pg_index JOIN pg_class index_class ON index_class.oid = pg_index.indexrelid
            WHERE pg_index.indrelid = %s::regclass
            """,
            [WebhookDelivery._meta.db_table],
        )
        return list(cursor.fetchall())


def _entered_by_received_row(predicate: str | None) -> bool:
    """Whether a row with status 'received' goes into an index with this predicate (None: every row does)."""
    if predicate is None:
        return True
    with connection.cursor() as cursor:
        # The predicate is PostgreSQL's own text of an index this project defined, not outside input.
        cursor.execute(f"SELECT {predicate} FROM (SELECT 'received'::varchar AS status) AS row_")  # noqa: S608
        return bool(cursor.fetchone()[0])


def test_a_received_delivery_is_written_into_no_more_indexes_than_its_queries_need() -> None:
    entered = [name for name, predicate in _indexes() if _entered_by_received_row(predicate)]

    assert len(entered) == INDEXES_A_RECEIVED_ROW_ENTERS, entered


def test_the_admin_search_by_instance_alone_is_served_by_an_index() -> None:
    # Without the default ordering: on the test's near-empty table, walking all of delivery_received in
    # order can cost the planner as little as the entity index plus a sort, and it picks either by chance.
    query = WebhookDelivery.objects.with_instance("ORD-2026-0001").order_by()  # type: ignore[attr-defined]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        sql, params = query.query.sql_with_params()
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "delivery_entity" in plan, plan
