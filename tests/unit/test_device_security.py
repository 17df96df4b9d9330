"""Device registrations (issue 10, items 2 and 3): takeover, the per-user cap, bounded table records.

The registry's fold runs here on plain dicts standing in for its Faust tables (the tables
are mappings; the agent and the changelog are exercised in
``tests/integration/test_security_devices.py``).
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from engine.devices import ActiveDevice, decide_registration, over_cap
from schemas.envelope import Envelope
from schemas.events import DeviceInvalidated, DeviceRegistered, DeviceUnregistered, Event
from schemas.ids import uuid7
from streams.device_registry import ACTIVE, INVALID, UNREGISTERED, DeviceRegistry

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _token() -> str:
    return secrets.token_hex(32)


def _env(event: Event, at: datetime) -> Envelope:
    return Envelope(id=uuid7(), source="tests", time=at, data=event, subject=None, userid=event.user_id)


def _registry(cap: int) -> DeviceRegistry:
    registry = DeviceRegistry(max_devices=cap)
    registry.tokens, registry.index, registry.contacts = {}, {}, {}
    return registry


def test_a_token_held_by_another_user_is_unregistered_for_them_first() -> None:
    token = _token()
    decision = decide_registration(DeviceRegistered("bob", token), previous_owner="alice", active=[], cap=20)
    assert decision.events == (DeviceUnregistered("alice", token), DeviceRegistered("bob", token))


def test_re_registering_ones_own_token_unregisters_nothing() -> None:
    token = _token()
    active = [ActiveDevice(token, T0)]
    decision = decide_registration(DeviceRegistered("bob", token), previous_owner="bob", active=active, cap=1)
    assert decision.events == (DeviceRegistered("bob", token),)


def test_one_token_over_the_cap_unregisters_the_oldest() -> None:
    tokens = [_token() for _ in range(3)]
    active = [ActiveDevice(t, T0 + timedelta(minutes=i)) for i, t in reversed(list(enumerate(tokens)))]
    new = _token()
    decision = decide_registration(DeviceRegistered("ann", new), previous_owner=None, active=active, cap=3)
    assert decision.unregistered == (DeviceUnregistered("ann", tokens[0]),)


@given(st.integers(0, 40), st.integers(1, 25))
def test_after_a_registration_the_user_never_holds_more_than_the_cap(count: int, cap: int) -> None:
    active = [ActiveDevice(f"{i:064x}", T0 + timedelta(seconds=i)) for i in range(count)]
    new = f"{count + 1:064x}"
    dropped = over_cap(active, new, cap=cap)
    assert count - len(dropped) + 1 <= cap
    # only the oldest go
    assert [d.token for d in dropped] == [d.token for d in active[: len(dropped)]]


def test_thousands_of_registrations_keep_every_table_record_small_and_the_index_at_the_cap() -> None:
    registry = _registry(cap=20)
    tokens = [_token() for _ in range(5000)]
    evicted: list[Envelope] = []
    for i, token in enumerate(tokens):
        evicted += registry.apply(_env(DeviceRegistered("mallory", token), T0 + timedelta(milliseconds=i)))
    assert registry.active_tokens_in_order("mallory") == tokens[-20:]
    assert sorted(registry.active_tokens("mallory")) == sorted(tokens[-20:])
    assert [e.data for e in evicted] == [DeviceUnregistered("mallory", t) for t in tokens[:-20]]
    largest = max(len(json.dumps(v)) for table in (registry.tokens, registry.index) for v in table.values())
    assert largest < 2000  # the old per-user record grew by ~100 bytes per registration, to 1 MB at ~7,700
    assert registry.state("mallory", tokens[0]) == UNREGISTERED


def test_unregistration_and_invalidation_take_a_token_out_of_the_index() -> None:
    registry = _registry(cap=5)
    gone, dead, kept = _token(), _token(), _token()
    for i, token in enumerate((gone, dead, kept)):
        registry.apply(_env(DeviceRegistered("alice", token), T0 + timedelta(seconds=i)))
    registry.apply(_env(DeviceUnregistered("alice", gone), T0 + timedelta(seconds=10)))
    registry.apply(_env(DeviceInvalidated("alice", dead, "Unregistered"), T0 + timedelta(seconds=11)))
    assert registry.active_tokens("alice") == [kept]
    assert (registry.state("alice", gone), registry.state("alice", dead)) == (UNREGISTERED, INVALID)
    registry.apply(_env(DeviceRegistered("alice", dead), T0 + timedelta(seconds=12)))  # reinstalled
    assert sorted(registry.active_tokens("alice")) == sorted([dead, kept])
    assert registry.state("alice", dead) == ACTIVE


def test_a_takeover_seen_by_the_previous_owner_s_partition_stops_their_pushes() -> None:
    registry = _registry(cap=20)
    token = _token()
    registry.apply(_env(DeviceRegistered("alice", token), T0))
    decision = decide_registration(DeviceRegistered("bob", token), previous_owner="alice", active=[], cap=20)
    for event in decision.events:
        registry.apply(_env(event, T0 + timedelta(seconds=1)))
    assert registry.active_tokens("alice") == []
    assert registry.active_tokens("bob") == [token]


_STEP = st.tuples(st.sampled_from(["register", "unregister", "invalidate"]), st.integers(0, 7), st.integers(-5, 5))


@given(st.lists(_STEP, max_size=60), st.integers(1, 4))
def test_the_index_always_lists_exactly_the_active_tokens_within_the_cap(
    steps: list[tuple[str, int, int]], cap: int
) -> None:
    registry = _registry(cap=cap)
    pool = [f"{i:064x}" for i in range(8)]
    now = T0
    for kind, which, skew in steps:
        now += timedelta(seconds=1)
        token = pool[which]
        event: Event
        if kind == "register":
            event = DeviceRegistered("u", token)
        elif kind == "unregister":
            event = DeviceUnregistered("u", token)
        else:  # APNs' invalid_since may be before or after the latest registration
            event = DeviceInvalidated("u", token, "Unregistered", invalid_since=now + timedelta(seconds=skew))
        registry.apply(_env(event, now))
        index = registry.active_tokens_in_order("u")
        assert len(index) <= cap
        assert len(set(index)) == len(index)
        assert set(index) == {t for t in pool if registry.state("u", t) == ACTIVE}
