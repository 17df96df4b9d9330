"""``Slots`` (the window the admission store changes in place) decides exactly as ``check`` and
``admit`` on the immutable ``Window``: same verdicts, same retry_after, same admissions kept."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.rate_limit import RateLimit, Slots, Window, admit, check


@settings(max_examples=400, deadline=None)
@given(
    steps=st.lists(
        # Half-second steps, so admissions often sit exactly on a window's edge; times may go
        # back (two workers' clocks) and ids come again (a request processed twice).
        st.tuples(
            st.integers(-20, 200).map(lambda t: t / 2),
            st.integers(0, 8),
            st.sampled_from(["check", "check", "admit", "forget", "rebuild"]),
        ),
        min_size=1,
        max_size=120,
    ),
    limit=st.integers(1, 6),
    length=st.integers(1, 20),
    indexed_from=st.sampled_from([0, 1, 2, 4, Slots.INDEXED_FROM]),
)
def test_slots_decide_and_keep_what_the_pure_window_does(
    steps: list[tuple[float, int, str]], limit: int, length: int, indexed_from: int
) -> None:
    default = Slots.INDEXED_FROM
    Slots.INDEXED_FROM = indexed_from  # ids counted in a dict from this length on (else scanned)
    try:
        _run_both(steps, RateLimit(limit, length), length)
    finally:
        Slots.INDEXED_FROM = default


def _run_both(steps: list[tuple[float, int, str]], policy: RateLimit, length: int) -> None:
    window = Window()
    slots = Slots()
    for at, n, what in steps:
        nid = f"n{n}"
        if what == "forget":  # the store's pruning when an admission's entry expires
            window = Window(tuple(a for a in window.admitted if a[0] > at - length))
            slots.forget_until(at - length)
        elif what == "rebuild":  # a window handed over from the general path (save) and back
            slots = Slots(slots.window().admitted)
        else:
            verdict = check(window, policy, now=at, notification_id=nid)
            assert slots.check(policy, now=at, notification_id=nid) == verdict
            assert slots.holds(nid) == (nid in {i for _, i in window.admitted})
            if verdict.allowed or what == "admit":
                window = admit(window, policy, now=at, notification_id=nid)
                slots.admit(policy, now=at, notification_id=nid)
        assert slots.window() == window
        assert len(slots) == len(window.admitted)
        assert bool(slots) == bool(window.admitted)


def test_a_full_window_refuses_with_the_same_retry_after() -> None:
    policy = RateLimit(limit=2, window_seconds=10)
    slots = Slots()
    for at, nid in [(0.0, "a"), (1.0, "b")]:
        slots.admit(policy, now=at, notification_id=nid)
    refused = slots.check(policy, now=9.999, notification_id="c")
    assert (refused.allowed, refused.retry_after_seconds) == (False, 0.001)
    assert slots.check(policy, now=9.999, notification_id="a").allowed  # already admitted: not counted twice
    assert slots.check(policy, now=10.0, notification_id="c").allowed
