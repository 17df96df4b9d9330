"""The sliding-window rate limit: exact, idempotent, serialisable."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.rate_limit import RateLimit, Window, admit, check

POLICY = RateLimit(limit=20, window_seconds=3600)


def _run(policy: RateLimit, times: list[float]) -> tuple[list[float], list[tuple[float, float]], Window]:
    """Feed requests at ``times``; return admitted times, refused (time, retry_after), final window."""
    window = Window()
    admitted: list[float] = []
    refused: list[tuple[float, float]] = []
    for i, at in enumerate(times):
        nid = f"n{i}"
        verdict = check(window, policy, now=at, notification_id=nid)
        if verdict.allowed:
            window = admit(window, policy, now=at, notification_id=nid)
            admitted.append(at)
        else:
            refused.append((at, verdict.retry_after_seconds))
    return admitted, refused, window


def _in_window(times: list[float], end: float, length: int) -> int:
    return sum(1 for t in times if end - length < t <= end)


def test_25_requests_within_an_hour_admit_20_then_refuse_with_retry_after() -> None:
    times = [1000.0 + 60 * i for i in range(25)]
    admitted, refused, _ = _run(POLICY, times)
    assert len(admitted) == 20
    assert len(refused) == 5
    # The 21st request (at 1000+1200s) waits until the first admission (at 1000s) leaves the window.
    assert refused[0] == (2200.0, 2400.0)


def test_a_slot_frees_exactly_when_the_oldest_admission_leaves_the_window() -> None:
    policy = RateLimit(limit=2, window_seconds=10)
    admitted, refused, _ = _run(policy, [0.0, 1.0, 9.999, 10.0, 10.5, 11.0])
    assert admitted == [0.0, 1.0, 10.0, 11.0]
    assert refused == [(9.999, 0.001), (10.5, 0.5)]


def test_the_same_notification_is_never_counted_twice() -> None:
    policy = RateLimit(limit=1, window_seconds=10)
    window = admit(Window(), policy, now=0.0, notification_id="a")
    assert check(window, policy, now=1.0, notification_id="a").allowed
    assert admit(window, policy, now=1.0, notification_id="a") == window
    assert not check(window, policy, now=1.0, notification_id="b").allowed


times_strategy = st.lists(st.floats(min_value=0, max_value=20_000, allow_nan=False), min_size=1, max_size=120).map(
    sorted
)


@settings(max_examples=200, deadline=None)
@given(times=times_strategy, limit=st.integers(1, 25), length=st.integers(1, 5000))
def test_never_more_than_the_limit_in_any_window_and_refusals_only_when_full(
    times: list[float], limit: int, length: int
) -> None:
    policy = RateLimit(limit, length)
    admitted, refused, _ = _run(policy, times)
    for end in admitted:
        # Any window containing admissions can be slid to end at one of them.
        assert _in_window(admitted, end, length) <= limit
    for at, retry_after in refused:
        assert _in_window(admitted, at, length) == limit, "refused although the window had room"
        assert 0 <= retry_after <= length
        # By ``at + retry_after`` (to the millisecond) an admission made before ``at`` has left.
        earlier = [t for t in admitted if t <= at]
        assert _in_window(earlier, at + retry_after + 1e-3, length) < limit


@settings(max_examples=100, deadline=None)
@given(times=times_strategy)
def test_replaying_the_same_requests_gives_the_same_state_and_json_round_trips(times: list[float]) -> None:
    first = _run(POLICY, times)
    assert _run(POLICY, times) == first
    window = first[2]
    assert Window.from_json(window.to_json()) == window
    assert len(window.admitted) <= POLICY.limit


def _reference_check(admitted: list[tuple[float, str]], policy: RateLimit, now: float, nid: str) -> tuple[bool, float]:
    """The limiter as a plain scan of every admission (what the bisection must agree with)."""
    current = [a for a in admitted if a[0] > now - policy.window_seconds]
    if any(n == nid for _, n in current) or len(current) < policy.limit:
        return True, 0.0
    oldest = current[len(current) - policy.limit][0]
    return False, max(0.0, math.ceil(round((oldest + policy.window_seconds - now) * 1000, 6)) / 1000)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        # Half-second steps, so admissions often sit exactly on a window's edge.
        st.tuples(st.integers(-20, 120).map(lambda t: t / 2), st.integers(0, 6)),
        min_size=1,
        max_size=80,
    ),
    limit=st.integers(1, 6),
    length=st.integers(1, 20),
)
def test_the_window_search_agrees_with_a_scan_of_every_admission_even_when_clocks_go_back(
    steps: list[tuple[float, int]], limit: int, length: int
) -> None:
    # Times are not sorted: two workers' clocks may disagree after a rebalance, and the same
    # id may come again (a request processed twice).
    policy = RateLimit(limit, length)
    window = Window()
    for at, n in steps:
        nid = f"n{n}"
        verdict = check(window, policy, now=at, notification_id=nid)
        assert (verdict.allowed, verdict.retry_after_seconds) == _reference_check(
            list(window.admitted), policy, at, nid
        )
        if verdict.allowed:
            window = admit(window, policy, now=at, notification_id=nid)
            times = [t for t, _ in window.admitted]
            assert times == sorted(times), "the log must stay ordered for the search to be exact"
            assert nid in {i for _, i in window.admitted}
