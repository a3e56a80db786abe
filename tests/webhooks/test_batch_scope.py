"""Values handlers gather during a batch: handed over once per key when the batch is flushed, at once outside one."""

from __future__ import annotations

from webhooks.registry import batch_scope, flush_batch_scope, gather


def test_gathered_values_are_handed_over_at_once_outside_a_batch() -> None:
    flushed: list[list[str]] = []

    gather("codes", ["A"], flushed.append)
    gather("codes", ["B", "C"], flushed.append)

    assert flushed == [["A"], ["B", "C"]]


def test_a_batch_hands_every_gathered_value_over_once_per_key_at_its_end() -> None:
    orders: list[list[str]] = []
    invoices: list[list[str]] = []

    with batch_scope() as scope:
        gather("orders", ["A"], orders.append)
        gather("invoices", ["I-1"], invoices.append)
        gather("orders", ["B", "A"], orders.append)
        assert orders == [] and invoices == []
        scope.run()

    assert orders == [["A", "B", "A"]]
    assert invoices == [["I-1"]]


def test_a_flush_mid_batch_runs_what_was_gathered_so_far_and_starts_afresh() -> None:
    flushed: list[list[str]] = []
    others: list[list[str]] = []

    with batch_scope() as scope:
        gather("codes", ["A"], flushed.append)
        gather("codes", ["A2"], others.append)  # the first flush given for a key is the one used
        flush_batch_scope()
        assert flushed == [["A", "A2"]] and others == []
        scope.run()
        assert flushed == [["A", "A2"]]  # nothing gathered since: nothing handed over
        gather("codes", ["B"], flushed.append)
        scope.run()

    assert flushed == [["A", "A2"], ["B"]]
    assert others == []


def test_flushing_outside_a_batch_does_nothing() -> None:
    flush_batch_scope()
