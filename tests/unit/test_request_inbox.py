"""The ingest agent's inbox (``streams.request_inbox.Inbox``): fetch order, waiting, and what a rebalance drops."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streams.internals import TakeEpoch, consumer_taking
from streams.request_inbox import Inbox


async def test_records_come_out_in_fetch_order_and_count_until_taken() -> None:
    inbox = Inbox()
    for record in ("a", "b", "c"):
        inbox.put(record)
    seen: list[str] = []
    while len(inbox):
        first = await inbox.first()
        assert len(inbox) == 3 - len(seen)  # still buffered while it waits its turn
        assert inbox.take(first)
        seen.append(first)
    assert seen == ["a", "b", "c"]


async def test_first_waits_for_a_record() -> None:
    inbox = Inbox()
    waiting = asyncio.create_task(inbox.first())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    inbox.put("late")
    assert await asyncio.wait_for(waiting, timeout=1) == "late"


async def test_a_record_cleared_while_waiting_its_turn_is_not_taken() -> None:
    epoch = TakeEpoch()
    inbox = Inbox(epoch)
    inbox.put("old")
    first = await inbox.first()
    epoch.bump()  # a rebalance: the consumer's partitions are revoked
    inbox.clear()  # then Faust clears its agents' buffers
    assert not len(inbox)
    inbox.put("refetched")
    assert not inbox.take(first)
    assert await inbox.first() == "refetched"


async def test_a_record_taken_before_the_consumer_moved_is_dead_even_uncleared() -> None:
    epoch = TakeEpoch()
    inbox = Inbox(epoch)
    inbox.put("before the seek")
    first = await inbox.first()
    epoch.bump()  # the seek back to the committed offsets: the record is read again
    assert not inbox.take(first)
    inbox.put("before the seek, again")
    inbox.put("next")
    assert await inbox.first() == "before the seek, again"


async def test_records_taken_since_the_last_move_survive_the_clear_of_a_resumed_flow() -> None:
    # Faust resumes the flow (and clears its buffers) after the seek that ends a rebalance,
    # and mid-rebalance while it reads its tables' changelogs: a record the consumer took
    # since its last move is read nowhere else, so it stays; one taken before it goes.
    epoch = TakeEpoch()
    inbox = Inbox(epoch)
    inbox.put("dead")
    epoch.bump()
    inbox.put("live 1")
    inbox.put("live 2")
    inbox.clear()
    assert len(inbox) == 2
    seen = []
    while len(inbox):
        record = await inbox.first()
        assert inbox.take(record)
        seen.append(record)
    assert seen == ["live 1", "live 2"]


class _FaustConsumer:
    """The state and calls of Faust's consumer that ``consumer_taking`` builds on, over scripted polls.

    A poll is issued when its ``getmany`` starts and handed out when ``hand_out`` is set, so a
    test can move the consumer in between (as a rebalance's seek does while a poll is in flight).
    """

    def __init__(self, committed: dict[TP, int | None]) -> None:
        self._read_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self.committed = committed
        self.polls: list[list[int]] = []
        self.hand_out = asyncio.Event()
        self.hand_out.set()
        self.gaps: list[tuple[int, int]] = []
        self.sought: list[tuple[TP, int]] = []

    def assignment(self) -> set[TP]:
        return set(self.committed)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        self.gaps.append((offset_from, offset_to))

    async def _seek(self, tp: TP, offset: int) -> None:
        self.sought.append((tp, offset))

    async def perform_seek(self) -> None:  # Faust: the read offsets become the committed ones
        self._read_offset.update(self.committed)

    async def seek(self, partition: TP, offset: int) -> None:
        await self._seek(partition, offset)
        self._read_offset[partition] = offset if offset else None

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        for tp, offset in partitions.items():
            await self.seek(tp, offset)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:  # Faust forgets the revoked partitions' state, then clears its buffers
            self._read_offset.pop(tp, None)
        self.clear_buffers()

    def clear_buffers(self) -> None:
        """``app.flow_control.clear()``: the test sets it to its inbox's ``clear``."""

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        offsets = self.polls.pop(0)
        await self.hand_out.wait()
        for offset in offsets:
            yield _TP, SimpleNamespace(offset=offset)


_TP = TP("requests.high", 0)


def _taking(committed: int | None) -> tuple[Any, Inbox, TakeEpoch]:
    epoch = TakeEpoch()
    inbox = Inbox(epoch)
    consumer = consumer_taking(_FaustConsumer, {_TP.topic: inbox.put}, epoch)({_TP: committed})
    return consumer, inbox, epoch


async def _poll(consumer: Any, *offsets: int) -> None:
    consumer.polls.append(list(offsets))
    async for _ in consumer.getmany(1.0):
        raise AssertionError("a request record went past its taker")


async def _live(inbox: Inbox) -> list[int]:
    inbox.clear()
    return [record.offset for _, record in inbox._records]


async def test_a_poll_issued_before_the_seek_back_is_neither_taken_nor_a_hole() -> None:
    consumer, inbox, _ = _taking(committed=5)
    await _poll(consumer, 5, 6, 7, 8, 9)
    assert await _live(inbox) == [5, 6, 7, 8, 9]
    # A rebalance ends with the seek back to the committed offset while a poll of the old
    # position (10, 11) is in flight: its records come again from the new position.
    consumer.hand_out.clear()
    consumer.polls.append([10, 11])
    stale = asyncio.create_task(_drain(consumer))
    await asyncio.sleep(0)
    await consumer.perform_seek()
    consumer.hand_out.set()
    await stale
    assert consumer.gaps == []
    assert await _live(inbox) == []  # 5-9 taken before the seek are read again, 10-11 were not taken
    await _poll(consumer, 5, 6, 7, 8, 9, 10, 11)
    assert consumer.gaps == []
    assert await _live(inbox) == [5, 6, 7, 8, 9, 10, 11]


async def test_the_next_offset_of_a_stale_poll_is_taken_and_read_once() -> None:
    consumer, inbox, _ = _taking(committed=5)
    await consumer.perform_seek()
    consumer.hand_out.clear()
    consumer.polls.append([5, 6, 9])
    stale = asyncio.create_task(_drain(consumer))
    await asyncio.sleep(0)
    await consumer.perform_seek()  # the consumer moved, to where the poll starts
    consumer.hand_out.set()
    await stale
    assert await _live(inbox) == [5, 6]  # 9 after 6 is no hole in a poll of a position left
    await _poll(consumer, 5, 6, 7, 8, 9)
    assert await _live(inbox) == [5, 6, 7, 8, 9]
    assert consumer.gaps == []


async def test_a_request_partition_is_moved_by_a_rebalance_only() -> None:
    consumer, _, _ = _taking(committed=5)
    with pytest.raises(RuntimeError, match=r"requests\.high\[0\]"):
        await consumer.seek(_TP, 3)
    with pytest.raises(RuntimeError, match=r"requests\.high\[0\]"):
        await consumer.seek_wait({_TP: 3})
    assert consumer.sought == []


async def test_a_hole_in_a_poll_after_the_last_move_is_recorded() -> None:
    consumer, inbox, _ = _taking(committed=5)
    await consumer.perform_seek()
    await _poll(consumer, 5, 6, 9)
    assert consumer.gaps == [(7, 8)]
    assert await _live(inbox) == [5, 6, 9]


async def test_without_a_committed_offset_the_consumer_goes_back_to_the_start_of_the_log() -> None:
    consumer, inbox, _ = _taking(committed=None)
    await _poll(consumer, 0, 1, 2)
    await consumer.perform_seek()
    assert consumer.sought == [(_TP, 0)]
    assert await _live(inbox) == []
    await _poll(consumer, 0, 1, 2)
    assert await _live(inbox) == [0, 1, 2]


async def test_revoked_partitions_forget_their_next_offset() -> None:
    consumer, inbox, _ = _taking(committed=5)
    await consumer.perform_seek()
    await _poll(consumer, 5, 6)

    consumer.clear_buffers = inbox.clear
    await consumer.on_partitions_revoked({_TP})
    assert not len(inbox)  # dead before Faust clears its buffers
    await _poll(consumer, 3, 4)  # a new owner's position: nothing taken before
    assert await _live(inbox) == [3, 4]


async def _drain(consumer: Any) -> None:
    async for _ in consumer.getmany(1.0):
        raise AssertionError("a request record went past its taker")
