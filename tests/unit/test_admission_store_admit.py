"""``AdmissionStore.admit`` (ingest's step) decides and writes exactly what the general path
(``view``, ``decide_admission``, ``evolve``, ``save``) does: the same outcomes, the same table
writes in the same order, the same state after a restart, on random histories (duplicates,
replayed records, rate-limited requests, expiry, clocks going back, a restart)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.admission import AdmissionPolicy
from engine.priority import Priority
from engine.rate_limit import Slots, default_limits
from schemas.envelope import Envelope
from schemas.events import NotificationAccepted, NotificationDuplicate, NotificationRateLimited
from streams.admission_store import AdmissionStore
from tests.unit.policy_support import NOW, accepted
from tests.unit.test_admission_policy import POLICY
from tests.unit.test_admission_store import _store_step as _general

SMALL = AdmissionPolicy(default_limits(3, 2, 1, 60), dedupe_window_seconds=150)
"""Small limits and windows: rate limits, expiry and reused keys happen in short histories."""


class Recording(dict[str, Any]):
    """A plain mapping standing in for the table that logs every write in order."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.log: list[tuple[str, Any]] = []

    def __setitem__(self, key: str, value: Any) -> None:
        self.log.append((key, json.dumps(value)))
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.log.append((key, None))
        super().__delitem__(key)


def _fast(store: AdmissionStore, decided: Envelope, source: str, partition: int) -> Envelope:
    data = decided.data
    assert isinstance(data, NotificationAccepted)
    store.expire(partition, now=decided.time.timestamp())
    return store.admit(decided, data, source=source, partition=partition, now=decided.time)


history = st.lists(
    st.tuples(
        st.sampled_from(list(Priority)),
        st.integers(-30, 600),  # seconds after NOW, plus a drift below (clocks may go back)
        st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3"])),
        st.integers(0, 30),  # request id (repeats: re-sent requests)
        st.integers(0, 60),  # record (repeats: the same record processed again)
        st.sampled_from(["alice", "alice", "bob"]),
        st.integers(0, 1),  # partition
    ),
    max_size=80,
)


def _compare(reqs: list[tuple[Any, ...]], restart_at: int, policy: AdmissionPolicy, scale: int) -> None:
    old_table, new_table = Recording(), Recording()
    old, new = AdmissionStore(old_table, policy), AdmissionStore(new_table, policy)
    reqs = sorted(reqs, key=lambda r: r[1] - r[4] % 3)  # mostly in time order, some steps back
    for step, (priority, secs, key, rid, record, user, partition) in enumerate(reqs):
        if step == restart_at:  # only the table survives a restart (or a rebalance)
            old_table, new_table = Recording(dict(old_table)), Recording(dict(new_table))
            old, new = AdmissionStore(old_table, policy), AdmissionStore(new_table, policy)
        when = NOW + timedelta(seconds=secs * scale, milliseconds=step)
        decided = accepted(f"r{rid}", priority=priority, now=when, idempotency_key=key, user=user)
        source = f"t/{partition}/{record}"
        expected = _general(old, decided, source, partition, policy)
        assert _fast(new, decided, source, partition) == expected
        assert new_table.log == old_table.log
        assert dict(new_table) == dict(old_table)
    for user, priority in {*old._windows, *new._windows}:
        assert new.view(user, (), priority).windows == old.view(user, (), priority).windows


@settings(max_examples=150, deadline=None)
@given(reqs=history, restart_at=st.integers(0, 90), indexed_from=st.sampled_from([0, 2, Slots.INDEXED_FROM]))
def test_admit_is_the_general_path_with_small_limits(
    reqs: list[tuple[Any, ...]], restart_at: int, indexed_from: int
) -> None:
    default = Slots.INDEXED_FROM
    Slots.INDEXED_FROM = indexed_from  # the windows' ids counted in a dict from this length on
    try:
        _compare(reqs, restart_at, SMALL, 1)
    finally:
        Slots.INDEXED_FROM = default


@settings(max_examples=60, deadline=None)
@given(reqs=history, restart_at=st.integers(0, 90))
def test_admit_is_the_general_path_with_the_default_limits(reqs: list[tuple[Any, ...]], restart_at: int) -> None:
    _compare(reqs, restart_at, POLICY, 12)


def test_every_kind_of_outcome_is_taken() -> None:
    table: dict[str, Any] = {}
    store = AdmissionStore(table, SMALL)
    outcomes = [
        _fast(store, accepted(f"n{i}", priority=Priority.LOW, now=NOW + timedelta(seconds=i)), f"t/0/{i}", 0)
        for i in range(2)
    ]
    again = _fast(store, accepted("n0", priority=Priority.LOW, now=NOW + timedelta(seconds=5)), "t/0/9", 0)
    assert [type(o.data) for o in [*outcomes, again]] == [
        NotificationAccepted,
        NotificationRateLimited,
        NotificationDuplicate,
    ]
