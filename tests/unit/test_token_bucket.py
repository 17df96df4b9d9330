"""The token bucket behind the REST write limit and the WebSocket frame limit."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.token_bucket import Bucket, BucketPolicy, take


def test_a_burst_then_the_sustained_rate() -> None:
    policy = BucketPolicy(rate=2.0, burst=3)
    bucket: Bucket | None = None
    outcomes = []
    for _ in range(4):
        taken = take(bucket, policy, now=100.0)
        bucket = taken.bucket
        outcomes.append(taken.allowed)
    assert outcomes == [True, True, True, False]
    refused = take(bucket, policy, now=100.0)
    assert refused.retry_after_seconds == 0.5
    assert take(refused.bucket, policy, now=100.5).allowed


def test_a_clock_going_backwards_refills_nothing() -> None:
    policy = BucketPolicy(rate=1.0, burst=1)
    spent = take(None, policy, now=50.0).bucket
    assert not take(spent, policy, now=10.0).allowed


@given(st.lists(st.floats(0, 5, allow_nan=False), max_size=200), st.integers(1, 10), st.floats(0.1, 10))
def test_never_more_than_burst_plus_rate_times_elapsed(gaps: list[float], burst: int, rate: float) -> None:
    policy = BucketPolicy(rate=rate, burst=burst)
    bucket: Bucket | None = None
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        taken = take(bucket, policy, now=now)
        bucket = taken.bucket
        allowed += taken.allowed
    assert allowed <= burst + rate * now + 1e-6
