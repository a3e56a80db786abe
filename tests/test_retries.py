"""The one retry policy: waits double, stop at the cap, and stay inside their jitter band."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from config.retries import TASK_RETRY, Backoff


def test_waits_double_up_to_the_cap() -> None:
    exact = Backoff(base=60.0, cap=3600.0, jitter=0)

    assert [exact.seconds(retry) for retry in range(8)] == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert exact.delay(0) == timedelta(minutes=1)


@given(retry=st.integers(min_value=-3, max_value=200), jitter=st.sampled_from([0.0, 0.5, 1.0]))
def test_a_jittered_wait_stays_inside_its_band(retry: int, jitter: float) -> None:
    policy = Backoff(base=0.5, cap=30.0, jitter=jitter)
    ceiling = policy.ceiling(retry)

    assert ceiling == min(30.0, 0.5 * 2 ** max(retry, 0))
    assert ceiling * (1 - jitter) <= policy.seconds(retry) <= ceiling


def test_task_retries_start_within_seconds_and_stop_at_ten_minutes() -> None:
    assert TASK_RETRY.ceiling(0) == 5.0
    assert TASK_RETRY.ceiling(50) == 600.0
    assert {TASK_RETRY.seconds(0) for _ in range(50)} != {5.0}  # full jitter: not all at the same second
