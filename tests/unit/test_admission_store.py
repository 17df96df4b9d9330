"""The worker's admission storage decides exactly as the pure policy, at a constant cost per request.

``streams.admission_store`` keeps one table entry per request key instead of one record
per user; these tests drive it with a plain dict standing in for the Faust table (it uses
only ``get``, ``[]=``, ``del`` and ``items``) and compare every outcome with the fold of
``engine.admission`` over the whole history.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import faust
from hypothesis import given, settings

from engine.admission import Admission, AdmissionPolicy, decide_admission, evolve, request_keys
from engine.priority import Priority
from schemas.envelope import Envelope
from schemas.events import NotificationAccepted, NotificationDuplicate, NotificationRateLimited
from streams.admission_store import AdmissionStore
from tests.unit.policy_support import NOW, accepted
from tests.unit.test_admission_policy import POLICY, requests_strategy


def _store_step(
    store: AdmissionStore, decided: Envelope, source: str, partition: int = 0, policy: AdmissionPolicy = POLICY
) -> Envelope:
    """The general path: ``view``, ``decide_admission``, ``evolve``, ``save``."""
    data = decided.data
    assert isinstance(data, NotificationAccepted)
    store.expire(partition, now=decided.time.timestamp())
    state = store.view(data.user_id, request_keys(data), data.priority)
    outcome = decide_admission(state, decided, source=source, policy=policy, now=decided.time)
    after = evolve(state, outcome, source=source, policy=policy)
    if after is not state:
        store.save(data.user_id, state, after, partition=partition)
    return outcome


@settings(max_examples=60, deadline=None)
@given(reqs=requests_strategy, restart_at=requests_strategy.map(len))
def test_the_store_decides_as_the_pure_fold_also_across_a_restart(
    reqs: list[tuple[Priority, int, str | None, int]], restart_at: int
) -> None:
    table: dict[str, list[object]] = {}
    store = AdmissionStore(table, POLICY)
    state = Admission()
    for offset, (priority, secs, key, rid) in enumerate(reqs):
        if offset == restart_at:
            # A restart (or a rebalance): only the table survives; the rest is rebuilt from it.
            store = AdmissionStore(json.loads(json.dumps(table)), POLICY)
            table = store._table
        decided = accepted(f"r{rid}", priority=priority, now=NOW + timedelta(seconds=secs), idempotency_key=key)
        source = f"t/0/{offset}"
        expected = decide_admission(state, decided, source=source, policy=POLICY, now=decided.time)
        state = evolve(state, expected, source=source, policy=POLICY)
        assert _store_step(store, decided, source) == expected


def test_a_request_costs_the_same_however_many_keys_the_user_has_used() -> None:
    table: dict[str, list[object]] = {}
    store = AdmissionStore(table, POLICY)
    sizes = []
    for i in range(4000):
        before = dict(table)
        at = NOW + timedelta(seconds=20 * i)  # 4,000 requests inside the 24 h dedupe window
        outcome = _store_step(
            store, accepted(f"n{i}", priority=Priority.HIGH, now=at, idempotency_key=f"k{i}"), "t/0/1"
        )
        assert isinstance(outcome.data, NotificationAccepted | NotificationRateLimited)
        written = {k: v for k, v in table.items() if before.get(k) != v}
        sizes.append(sum(len(json.dumps([k, v])) for k, v in written.items()))
    accepted_sizes = [s for s in sizes if s]
    # Bytes written per acceptance (two key entries) do not grow with the keys already in the window.
    assert max(accepted_sizes) - min(accepted_sizes) <= 16
    assert max(accepted_sizes) < 300


def test_entries_leave_the_table_with_the_dedupe_window_and_a_key_is_then_usable_again() -> None:
    table: dict[str, list[object]] = {}
    store = AdmissionStore(table, POLICY)
    for i in range(50):
        _store_step(
            store,
            accepted(f"a{i}", priority=Priority.HIGH, now=NOW + timedelta(seconds=i), idempotency_key=f"k{i}"),
            f"t/0/{i}",
        )
    assert len(table) == 100
    later = NOW + timedelta(hours=24, minutes=1)
    # Each processed record of the partition deletes a few expired entries: bounded work per record.
    for i in range(20):
        _store_step(
            store, accepted(f"b{i}", priority=Priority.HIGH, now=later + timedelta(seconds=i)), f"t/0/{100 + i}"
        )
    assert not any(k.endswith("\x1fk0") for k in table)
    assert len(table) == 20, "only the new requests' entries remain (one each: no idempotency key)"
    again = _store_step(store, accepted("c", now=later + timedelta(minutes=1), idempotency_key="k1"), "t/0/200")
    assert isinstance(again.data, NotificationAccepted)


def test_a_duplicate_names_the_original_after_a_restart() -> None:
    table: dict[str, list[object]] = {}
    store = AdmissionStore(table, POLICY)
    _store_step(store, accepted("first", now=NOW, idempotency_key="order-1"), "t/0/1")
    restarted = AdmissionStore(dict(table), POLICY)
    outcome = _store_step(
        restarted, accepted("second", now=NOW + timedelta(hours=2), idempotency_key="order-1"), "t/0/2"
    )
    assert outcome.data == NotificationDuplicate(
        notification_id="second", user_id="alice", idempotency_key="order-1", original_id="first"
    )


async def test_over_a_faust_table_the_changelog_records_go_to_the_producer_in_the_order_written() -> None:
    # A real Faust table (no broker): each write changes the local store at once, and its changelog
    # record (the bytes the table's own write would produce) goes to the app's producer directly on
    # ``send_changes``, not through the table's send_changelog (Faust's send buffer).
    app = faust.App("admission-unit", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
    table: Any = app.Table("herald-dedupe", default=None, partitions=4)
    buffered: list[Any] = []
    table.send_changelog = lambda *args, **kwargs: buffered.append(args)
    produced: list[tuple[Any, ...]] = []

    class Producer:
        async def send(self, *record: Any) -> asyncio.Future[None]:
            produced.append(record)
            acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            acked.set_result(None)
            return acked

    async def started() -> Producer:
        return Producer()

    app.maybe_start_producer = started
    topic = table.changelog_topic
    name = topic.get_topic_name()

    def faust_record(key: str, value: Any) -> tuple[Any, ...]:
        serializer = table.value_serializer if value is not None else "raw"  # Table.on_key_del: a raw tombstone
        message = topic.as_future_message(
            key=key, value=value, partition=2, key_serializer=table.key_serializer, value_serializer=serializer
        ).message
        return (name, message.key, message.value, 2, None, None)

    store = AdmissionStore(table, POLICY)
    first = _store_step(store, accepted("first", now=NOW, idempotency_key="order-1"), "t/2/1", partition=2)
    assert isinstance(first.data, NotificationAccepted)
    written = dict(table.data)
    assert set(written) == {"alice\x1ffirst", "alice\x1forder-1"} and produced == []  # stored, not yet sent
    await store.send_changes()
    assert produced == [faust_record(key, written[key]) for key in ("alice\x1forder-1", "alice\x1ffirst")]
    produced.clear()
    # A day later the same key: the old entries expire (tombstones), then the key's new entry.
    later = NOW + timedelta(hours=24, minutes=1)
    again = _store_step(store, accepted("again", now=later, idempotency_key="order-1"), "t/2/9", partition=2)
    assert isinstance(again.data, NotificationAccepted)
    await store.send_changes()
    assert produced == [
        faust_record("alice\x1forder-1", None),
        faust_record("alice\x1ffirst", None),
        faust_record("alice\x1forder-1", table.data["alice\x1forder-1"]),
        faust_record("alice\x1fagain", table.data["alice\x1fagain"]),
    ]
    assert buffered == []
    # The changelog read back (last record per key) is the table: what a restart restores.
    restored: dict[bytes, bytes | None] = {}
    for _, key, value, *_rest in produced:
        restored[key] = value
    assert {k: v for k, v in restored.items() if v is not None} == {
        faust_record(k, v)[1]: faust_record(k, v)[2] for k, v in table.data.items()
    }


async def test_agents_sending_at_once_hand_every_record_over_once_in_the_order_written() -> None:
    # The ingest agents (one per priority) share the store; a producer that yields in its send
    # lets a second agent's send_changes start while the first one's records are going out.
    app = faust.App("admission-unit-2", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
    table: Any = app.Table("herald-dedupe", default=None, partitions=4)
    produced: list[bytes] = []

    class Producer:
        async def send(self, topic: str, key: bytes, *rest: Any) -> asyncio.Future[None]:
            await asyncio.sleep(0)
            produced.append(key)
            acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            acked.set_result(None)
            return acked

    async def started() -> Producer:
        return Producer()

    app.maybe_start_producer = started
    store = AdmissionStore(table, POLICY)
    written: list[bytes] = []
    sending = []
    for i in range(6):
        before = dict(table.data)
        _store_step(store, accepted(f"n{i}", now=NOW, idempotency_key=f"k{i}"), f"t/1/{i}", partition=1)
        written += [
            table.changelog_topic.prepare_key(k, table.key_serializer)[0] for k in table.data if k not in before
        ]
        sending.append(asyncio.create_task(store.send_changes()))
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*sending), 5)
    assert len(written) == 12 and produced == written
