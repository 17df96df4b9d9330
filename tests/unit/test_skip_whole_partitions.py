"""``streams.internals.consumer_skipping`` passes over a poll's partition whose records no agent needs
before Faust makes messages of them, and leaves the consumer exactly as acking them one by one did.

The reference is the record-by-record path (what ``SkippingConsumer.getmany`` does for a record
its filter rejects: mark it read, then Faust's own ``Consumer.ack``), run on the same scripted
polls; both sides then go through the same drain (``_drain_messages``: a delivered record is
marked read). Faust's ``Consumer.ack`` itself does the acking on the reference side.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from faust.transport import consumer as faust_consumer
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.internals import consumer_skipping

LOG, OTHER = "log", "requests"


class _Message:
    """What Faust's ``_to_message`` makes of a record (the fields ``ack`` and the filter read)."""

    def __init__(self, tp: TP, record: Any) -> None:
        self.tp, self.topic, self.offset = tp, tp.topic, record.offset
        self.value, self.headers = record.value, record.headers
        self.acked = False


class _FaustConsumer:
    """The state ``Consumer.ack`` keeps, Faust's ``ack`` itself, and scripted polls."""

    ack = faust_consumer.Consumer.ack  # type: ignore[assignment]

    def __init__(self, polls: list[dict[TP, list[Any]]], committed: dict[TP, int | None], acks: bool) -> None:
        self.polls = list(polls)
        self.app = SimpleNamespace(
            topics=SimpleNamespace(acks_enabled_for=lambda topic: acks),
            monitor=SimpleNamespace(track_tp_end_offset=lambda tp, offset: None),
        )
        self._committed_offset: defaultdict[TP, int | None] = defaultdict(lambda: None, committed)
        self._read_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self._acked: defaultdict[TP, list[int]] = defaultdict(list)
        self._acked_index: defaultdict[TP, set[int]] = defaultdict(set)
        self._n_acked = 0
        self._unacked_messages: set[Any] = set()
        self._waiting_for_ack: asyncio.Future[Any] | None = None
        self._buffered_partitions: set[TP] = set()
        self.flow_active = True

    def highwater(self, tp: TP) -> int:
        return 1_000

    # Faust's signature, hence ``timeout``.
    async def _getmany(self, active_partitions: Any, timeout: float) -> dict[TP, list[Any]]:
        return {tp: list(records) for tp, records in self.polls.pop(0).items()}

    # Faust's signature, hence ``timeout``.
    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        records = await self._getmany(None, timeout)
        for tp, batch in records.items():
            for record in batch:
                yield tp, _Message(tp, record)


def _needed(record: Any) -> bool:
    return bool(record.value.startswith(b"device"))


async def _drain(consumer: Any, polls: int) -> list[tuple[str, int, int]]:
    """``_drain_messages`` over ``polls`` polls: the delivered records, each marked read."""
    delivered = []
    read = consumer._read_offset
    for _ in range(polls):
        async for tp, message in consumer.getmany(1.0):
            if read[tp] is None or message.offset >= read[tp]:
                read[tp] = message.offset
                delivered.append((tp.topic, tp.partition, message.offset))
    return delivered


async def _one_by_one(consumer: _FaustConsumer, polls: int) -> tuple[list[tuple[str, int, int]], int]:
    """The record-by-record path: a rejected record marked read and acked with Faust's ``ack``."""
    delivered, skipped = [], 0
    read, committed = consumer._read_offset, consumer._committed_offset
    for _ in range(polls):
        async for tp, message in _FaustConsumer.getmany(consumer, 1.0):
            if tp.topic != LOG or committed[tp] is None or _needed(message):
                if read[tp] is None or message.offset >= read[tp]:
                    read[tp] = message.offset
                    delivered.append((tp.topic, tp.partition, message.offset))
                continue
            if read[tp] is None or message.offset >= read[tp]:
                read[tp] = message.offset
                faust_consumer.Consumer.ack(consumer, message)  # type: ignore[arg-type]  # Faust's own ack
                skipped += 1
    return delivered, skipped


def _state(consumer: Any) -> dict[str, Any]:
    return {
        "read": {tp: v for tp, v in consumer._read_offset.items() if v is not None},
        "acked": {tp: list(v) for tp, v in consumer._acked.items() if v},
        "index": {tp: set(v) for tp, v in consumer._acked_index.items() if v},
        "n_acked": consumer._n_acked,
    }


_partition = st.sampled_from([TP(LOG, 0), TP(LOG, 1), TP(OTHER, 0)])


@st.composite
def _script(draw: Any) -> tuple[list[dict[TP, list[Any]]], dict[TP, int | None], bool]:
    """Polls of consecutive offsets per partition (sometimes going back, as after a seek)."""
    next_offset = {tp: draw(st.integers(0, 5)) for tp in (TP(LOG, 0), TP(LOG, 1), TP(OTHER, 0))}
    polls = []
    for _ in range(draw(st.integers(1, 5))):
        poll: dict[TP, list[Any]] = {}
        for tp in draw(st.lists(_partition, unique=True, max_size=3)):
            if draw(st.booleans()) and next_offset[tp] > 2:
                next_offset[tp] -= draw(st.integers(1, 2))  # read again from an earlier offset
            count = draw(st.integers(0, 6))
            values = draw(st.lists(st.sampled_from([b"note", b"note", b"device"]), min_size=count, max_size=count))
            poll[tp] = [SimpleNamespace(offset=next_offset[tp] + i, value=v, headers=()) for i, v in enumerate(values)]
            next_offset[tp] += count
        polls.append(poll)
    committed = {tp: draw(st.one_of(st.none(), st.integers(0, 8))) for tp in next_offset}
    return polls, committed, draw(st.booleans())


@settings(max_examples=300, deadline=None)
@given(_script())
def test_whole_partitions_passed_over_leave_what_acking_each_record_left(
    script: tuple[list[dict[TP, list[Any]]], dict[TP, int | None], bool],
) -> None:
    polls, committed, acks = script
    skipping = consumer_skipping(_FaustConsumer, {LOG: _needed})
    fast = skipping(polls, committed, acks)
    reference = _FaustConsumer(polls, committed, acks)

    async def run() -> tuple[Any, Any]:
        return await _drain(fast, len(polls)), await _one_by_one(reference, len(polls))

    delivered, (expected, skipped) = asyncio.run(run())
    assert delivered == expected
    assert _state(fast) == _state(reference)
    assert fast.skipped == skipped


def test_a_partition_with_a_needed_record_is_delivered_record_by_record() -> None:
    tp = TP(LOG, 0)
    records = [SimpleNamespace(offset=o, value=v, headers=()) for o, v in [(5, b"note"), (6, b"device"), (7, b"note")]]
    consumer = consumer_skipping(_FaustConsumer, {LOG: _needed})([{tp: records}], {tp: 5}, True)
    delivered = asyncio.run(_drain(consumer, 1))
    assert delivered == [(LOG, 0, 6)]  # 5 and 7 acked on the way, in order, 6 delivered between them
    assert consumer._acked[tp] == [5, 7] and consumer.skipped == 2


def test_a_partition_of_rejected_records_is_never_made_into_messages() -> None:
    tp = TP(LOG, 1)
    made: list[int] = []

    class Counting(_FaustConsumer):
        async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
            async for tp, message in super().getmany(timeout):
                made.append(message.offset)
                yield tp, message

    records = [SimpleNamespace(offset=o, value=b"note", headers=()) for o in range(10, 20)]
    consumer = consumer_skipping(Counting, {LOG: _needed})([{tp: records}], {tp: 10}, True)
    assert asyncio.run(_drain(consumer, 1)) == []
    assert made == []  # passed over in _getmany
    assert consumer._acked[tp] == list(range(10, 20)) and consumer._read_offset[tp] == 19


def test_nothing_is_passed_over_while_the_flow_is_stopped_or_for_an_inactive_partition() -> None:
    tp = TP(LOG, 0)
    records = [SimpleNamespace(offset=o, value=b"note", headers=()) for o in range(3)]
    stopped = consumer_skipping(_FaustConsumer, {LOG: _needed})([{tp: records}], {tp: 0}, True)
    stopped.flow_active = False
    assert asyncio.run(stopped._getmany(None, 1.0)) == {tp: records}
    assert stopped.skipped == 0 and not stopped._acked[tp]
    inactive = consumer_skipping(_FaustConsumer, {LOG: _needed})([{tp: records}], {tp: 0}, True)
    assert asyncio.run(inactive._getmany({TP(LOG, 1)}, 1.0)) == {tp: records}
    assert inactive.skipped == 0
