"""Admission: duplicates inside the window, per-priority rate limits, deterministic replay."""

from __future__ import annotations

from datetime import timedelta
from functools import reduce

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.admission import Admission, AdmissionPolicy, decide_admission, evolve
from engine.priority import Priority
from engine.rate_limit import default_limits
from schemas.envelope import Envelope
from schemas.events import NotificationAccepted, NotificationDuplicate, NotificationRateLimited
from tests.unit.policy_support import NOW, accepted, assert_valid

POLICY = AdmissionPolicy(default_limits(100, 50, 20, 3600), dedupe_window_seconds=24 * 3600)


def _step(state: Admission, decided: Envelope, source: str) -> tuple[Admission, Envelope]:
    outcome = decide_admission(state, decided, source=source, policy=POLICY, now=decided.time)
    return evolve(state, outcome, source=source, policy=POLICY), outcome


def test_a_repeated_idempotency_key_is_a_duplicate_naming_the_original() -> None:
    state, first = _step(Admission(), accepted("a", idempotency_key="k"), "t/0/1")
    _, second = _step(state, accepted("b", now=NOW + timedelta(hours=1), idempotency_key="k"), "t/0/2")
    assert isinstance(first.data, NotificationAccepted)
    assert second.data == NotificationDuplicate(
        notification_id="b", user_id="alice", idempotency_key="k", original_id="a"
    )
    assert_valid(second)


def test_a_repeated_event_id_without_key_is_a_duplicate_but_the_same_record_replays() -> None:
    state, first = _step(Admission(), accepted("a"), "t/0/1")
    _, redelivered = _step(state, accepted("a"), "t/0/1")
    _, republished = _step(state, accepted("a"), "t/0/9")
    assert redelivered == first, "the same record processed again gives the same event (same id)"
    assert isinstance(republished.data, NotificationDuplicate)
    assert republished.data.original_id == "a"


def test_a_key_is_forgotten_after_the_window() -> None:
    state, _ = _step(Admission(), accepted("a", idempotency_key="k"), "t/0/1")
    _, later = _step(state, accepted("b", now=NOW + timedelta(hours=24, seconds=1), idempotency_key="k"), "t/0/2")
    assert isinstance(later.data, NotificationAccepted)


def test_rate_limit_is_per_priority_and_says_when_to_retry() -> None:
    state = Admission()
    outcomes = []
    for i in range(21):
        state, out = _step(state, accepted(f"l{i}", now=NOW + timedelta(seconds=i)), f"t/0/{i}")
        outcomes.append(out)
    limited = outcomes[-1].data
    assert isinstance(limited, NotificationRateLimited)
    assert (limited.priority, limited.limit, limited.window_seconds, limited.retry_after_seconds) == (
        "low",
        20,
        3600,
        3580,
    )
    assert_valid(outcomes[-1])
    _, high = _step(state, accepted("h", priority=Priority.HIGH, now=NOW + timedelta(seconds=30)), "t/0/99")
    assert isinstance(high.data, NotificationAccepted)
    # Refused and duplicate requests leave the state as it was.
    assert evolve(state, outcomes[-1], source="t/0/20", policy=POLICY) == state


requests_strategy = st.lists(
    st.tuples(
        st.sampled_from(list(Priority)),
        st.integers(0, 7200),  # seconds after NOW
        st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3"])),
        st.integers(0, 40),  # request id (repeats model re-sent events)
    ),
    max_size=80,
).map(lambda rs: sorted(rs, key=lambda r: r[1]))


def _replay(reqs: list[tuple[Priority, int, str | None, int]]) -> tuple[Admission, list[Envelope]]:
    state, outcomes = Admission(), []
    for offset, (priority, secs, key, rid) in enumerate(reqs):
        decided = accepted(f"r{rid}", priority=priority, now=NOW + timedelta(seconds=secs), idempotency_key=key)
        state, out = _step(state, decided, f"t/0/{offset}")
        outcomes.append(out)
    return state, outcomes


@settings(max_examples=60, deadline=None)
@given(reqs=requests_strategy)
def test_replay_is_deterministic_state_is_the_fold_of_outcomes_and_events_validate(
    reqs: list[tuple[Priority, int, str | None, int]],
) -> None:
    state, outcomes = _replay(reqs)
    assert _replay(reqs) == (state, outcomes)
    sources = [f"t/0/{i}" for i in range(len(outcomes))]
    folded = reduce(
        lambda s, pair: evolve(s, pair[0], source=pair[1], policy=POLICY),
        zip(outcomes, sources, strict=False),
        Admission(),
    )
    assert folded == state
    assert Admission.from_json(state.to_json()) == state
    for out in outcomes:
        assert_valid(out)
    # Never two acceptances for one key, nor for one notification id.
    taken = [o.data for o in outcomes if isinstance(o.data, NotificationAccepted)]
    keys = [a.idempotency_key for a in taken if a.idempotency_key]
    assert len(keys) == len(set(keys))
    assert len({a.notification_id for a in taken}) == len(taken)
