"""``SentTargets`` expiry logic over a plain mapping (the Faust table's dict interface):
remembered for the TTL, forgotten after it, oldest first and bounded per event, and the
index rebuilt from the table after a rebalance; its durable write over a real Faust table;
``InFlight``'s hold on a pair."""

from __future__ import annotations

import asyncio
from typing import Any

import faust

from streams.sent_targets import EXPIRE_PER_EVENT, InFlight, SentTargets


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_pair_is_sent_within_the_ttl_and_forgotten_after_it() -> None:
    table: dict[str, object] = {}
    clock = Clock()
    sent = SentTargets(table, ttl=60, clock=clock)
    key = SentTargets.key("n1", "a@example.test")
    sent.add(key, "<id>", partition=0)
    clock.now += 59
    assert sent.sent(key) and sent.expire(0) == 0
    clock.now += 2
    assert not sent.sent(key)  # past the TTL it no longer blocks, even before deletion
    assert sent.expire(1) == 0  # another partition's event leaves it alone
    assert sent.expire(0) == 1 and key not in table


def test_expiry_is_bounded_per_event_and_oldest_first() -> None:
    table: dict[str, object] = {}
    clock = Clock()
    sent = SentTargets(table, ttl=10, clock=clock)
    for i in range(EXPIRE_PER_EVENT + 5):
        sent.add(SentTargets.key(f"n{i}", "t"), None, partition=3)
        clock.now += 0.001
    clock.now += 11
    assert sent.expire(3) == EXPIRE_PER_EVENT
    assert sorted(table) == sorted(SentTargets.key(f"n{i}", "t") for i in range(EXPIRE_PER_EVENT, EXPIRE_PER_EVENT + 5))
    assert sent.expire(3) == 5 and not table


def test_the_index_is_rebuilt_from_the_table_after_a_rebalance() -> None:
    table: dict[str, object] = {}
    clock = Clock()
    writer = SentTargets(table, ttl=10, clock=clock)
    writer.add("old", None, partition=1)
    writer.add("other", None, partition=2)
    table["legacy"] = "sent"  # before expiry existed: kept, still counts as sent
    reader = SentTargets(table, ttl=10, clock=clock)  # another worker, or this one after a rebalance
    reader.invalidate()
    clock.now += 11
    assert reader.expire(1) == 1 and "old" not in table
    assert reader.expire(2) == 1 and "other" not in table
    assert reader.sent("legacy") and "legacy" in table


def test_a_pair_sent_again_after_expiry_is_not_deleted_by_its_old_index_entry() -> None:
    table: dict[str, object] = {}
    clock = Clock()
    sent = SentTargets(table, ttl=10, clock=clock)
    sent.add("k", None, partition=0)
    clock.now += 11
    sent.add("k", None, partition=0)  # re-sent (a new work record after the horizon)
    assert sent.expire(0) == 0 and "k" in table
    clock.now += 11
    assert sent.expire(0) == 1 and "k" not in table


async def _settle() -> None:
    for _ in range(5):  # a few loop turns: every runnable step runs
        await asyncio.sleep(0)


async def test_in_flight_holds_a_pair_for_one_delivery_at_a_time_and_others_freely() -> None:
    flight = InFlight()
    order: list[str] = []
    first_in, release_first = asyncio.Event(), asyncio.Event()

    async def deliver(name: str, key: str, hold: asyncio.Event | None = None) -> None:
        async with flight.claim(key):
            order.append(f"{name} in")
            if hold is not None:
                first_in.set()
                await hold.wait()
            order.append(f"{name} out")

    first = asyncio.create_task(deliver("a", "n1\x1ft", release_first))
    await first_in.wait()
    second = asyncio.create_task(deliver("b", "n1\x1ft"))
    third = asyncio.create_task(deliver("c", "n2\x1ft"))
    await _settle()
    assert order == ["a in", "c in", "c out"] and len(flight) == 1  # b waits for a; c's pair is another
    release_first.set()
    await asyncio.wait_for(asyncio.gather(first, second, third), 5)
    assert order == ["a in", "c in", "c out", "a out", "b in", "b out"] and len(flight) == 0


async def test_a_waiter_cancelled_while_waiting_leaves_the_pair_usable() -> None:
    flight = InFlight()
    held, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with flight.claim("k"):
            held.set()
            await release.wait()

    async def waiter() -> None:
        async with flight.claim("k"):
            pass

    running = asyncio.create_task(holder())
    await held.wait()
    cancelled, queued = asyncio.create_task(waiter()), asyncio.create_task(waiter())
    await _settle()
    cancelled.cancel()
    await _settle()
    release.set()
    await asyncio.wait_for(asyncio.gather(running, queued), 5)
    assert cancelled.cancelled() and len(flight) == 0
    await asyncio.wait_for(waiter(), 5)  # free again


async def test_a_durable_pair_is_the_changelog_record_faust_would_write_and_waits_for_its_ack() -> None:
    # A real Faust table (no broker): the record handed to the producer is the one the table's own
    # write would produce (its changelog topic, serialisers and the event's partition).
    app = faust.App("sent-targets-unit", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
    table: Any = app.Table("herald.sink.apns.sent", default=None, partitions=4, key_type=str)
    acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    produced: list[tuple[Any, ...]] = []

    class Producer:
        async def send(self, *record: Any) -> asyncio.Future[None]:
            produced.append(record)
            return acked

    async def started() -> Producer:
        return Producer()

    app.maybe_start_producer = started  # type: ignore[method-assign]
    clock = Clock()
    sent = SentTargets(table, ttl=60, clock=clock)
    key = SentTargets.key("n1", "ab" * 32)
    adding = asyncio.create_task(sent.add_durably(key, "apns-id-1", partition=2))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not adding.done()  # waits for the broker's acknowledgement
    acked.set_result(None)
    await asyncio.wait_for(adding, 5)
    value = {"at": clock.now, "p": 2, "id": "apns-id-1"}
    faust_record = table.changelog_topic.as_future_message(
        key=key, value=value, partition=2, key_serializer=table.key_serializer, value_serializer=table.value_serializer
    ).message
    assert produced == [(table.changelog_topic.get_topic_name(), faust_record.key, faust_record.value, 2, None, None)]
    assert table.data[key] == value and sent.sent(key) and len(sent) == 1


class _SpyProducer:
    """The app's producer: every record handed to it, acknowledged at once (after a loop turn when ``yields``)."""

    def __init__(self, *, yields: bool = False) -> None:
        self.produced: list[tuple[Any, ...]] = []
        self.yields = yields

    async def send(self, *record: Any) -> asyncio.Future[None]:
        if self.yields:
            await asyncio.sleep(0)
        self.produced.append(record)
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        acked.set_result(None)
        return acked


def _faust_table(name: str, producer: _SpyProducer) -> tuple[Any, list[Any]]:
    app = faust.App(name, broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
    table: Any = app.Table("herald.sink.apns.sent", default=None, partitions=4, key_type=str)
    buffered: list[Any] = []
    table.send_changelog = lambda *args, **kwargs: buffered.append(args)  # Faust's send buffer: must stay unused

    async def started() -> _SpyProducer:
        return producer

    app.maybe_start_producer = started  # type: ignore[method-assign]
    return table, buffered


def _faust_record(table: Any, key: str, value: Any, partition: int) -> tuple[Any, ...]:
    topic = table.changelog_topic
    serializer = table.value_serializer if value is not None else "raw"  # Table.on_key_del: a raw tombstone
    message = topic.as_future_message(
        key=key, value=value, partition=partition, key_serializer=table.key_serializer, value_serializer=serializer
    ).message
    return (topic.get_topic_name(), message.key, message.value, partition, None, None)


def _restored(table: Any, produced: list[tuple[Any, ...]]) -> dict[bytes, bytes]:
    """The changelog read back (last record per key, tombstones dropped): what a restart restores."""
    last: dict[bytes, bytes | None] = {}
    for _, key, value, *_rest in produced:
        last[key] = value
    return {key: value for key, value in last.items() if value is not None}


def _as_records(table: Any) -> dict[bytes, bytes]:
    return {
        _faust_record(table, key, value, 0)[1]: _faust_record(table, key, value, 0)[2]
        for key, value in table.data.items()
    }


async def test_expiry_tombstones_go_to_the_producer_in_write_order_before_a_re_add_of_the_pair() -> None:
    # The gap fixed: tombstones went through Faust's send buffer (produced later) while sent pairs
    # went to the producer directly, so a pair expired and then sent again could end deleted on
    # the changelog (the tombstone after the re-add) though the local store held it.
    producer = _SpyProducer()
    table, buffered = _faust_table("sent-targets-order", producer)
    clock = Clock()
    sent = SentTargets(table, ttl=10, clock=clock)
    await sent.add_durably("k", "id-1", partition=1)
    await sent.add_durably("other", "id-2", partition=1)
    first = dict(table.data)
    clock.now += 11
    assert sent.expire(1) == 2 and not table.data  # the local store at once, the tombstones not yet sent
    assert len(producer.produced) == 2
    await sent.add_durably("k", "id-3", partition=1)  # another actor re-sends the pair before this one's send_changes
    await sent.send_changes()
    assert producer.produced == [
        _faust_record(table, "k", first["k"], 1),
        _faust_record(table, "other", first["other"], 1),
        _faust_record(table, "k", None, 1),
        _faust_record(table, "other", None, 1),
        _faust_record(table, "k", table.data["k"], 1),
    ]
    assert buffered == []
    assert _restored(table, producer.produced) == _as_records(table) and sent.sent("k")


async def test_actors_writing_at_once_hand_every_record_over_once_in_the_order_written() -> None:
    # A sink's actors share the table; a producer that yields in its send lets a second actor's
    # send_changes start while the first one's records are going out.
    producer = _SpyProducer(yields=True)
    table, buffered = _faust_table("sent-targets-concurrent", producer)
    clock = Clock()
    sent = SentTargets(table, ttl=10, clock=clock)
    written: list[tuple[bytes, bool]] = []
    tasks = []
    for i in range(4):
        tasks.append(asyncio.create_task(sent.add_durably(f"k{i}", None, partition=0)))
        written.append((table.changelog_topic.prepare_key(f"k{i}", table.key_serializer)[0], True))
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    clock.now += 11
    assert sent.expire(0) == 4
    written += [(key, False) for key, _ in written]
    tasks = [asyncio.create_task(sent.send_changes())]
    for i in range(2):  # re-added while the tombstones are going out
        tasks.append(asyncio.create_task(sent.add_durably(f"k{i}", None, partition=0)))
        written.append((table.changelog_topic.prepare_key(f"k{i}", table.key_serializer)[0], True))
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert [(key, value is not None) for _, key, value, *_ in producer.produced] == written
    assert buffered == []
    assert _restored(table, producer.produced) == _as_records(table) and set(table.data) == {"k0", "k1"}
