"""How the ingest agent shares the event loop (``streams.request_inbox.process``).

The records of one poll, already in the inbox, go through in one go: the loop does not turn
between them, so the producer sends their acceptances (which the live frames wait for) in one
request and the live dispatch takes their frames in one batch. The loop still turns once the
agent has held it for ``TURN`` seconds, and whenever the inbox is empty. The consumer lets the
loop run as soon as it has put request records in the inboxes (``consumer_yielding``), before
it delivers the rest of the poll.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import faust
import pytest
from faust.types import Message

from engine.priority import Priority
from streams.internals import TakeEpoch, consumer_taking
from streams.priority_gate import PriorityGate
from streams.request_inbox import TURN, Inbox, consumer_yielding, process

TOPIC = "herald.requests.high"


class Turns:
    """Counts the event loop's turns: a task that yields at every one."""

    def __init__(self) -> None:
        self.count = 0
        self._task = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)

    def stop(self) -> None:
        self._task.cancel()


class Recorder:
    """The agent's handler: notes, per record, how many turns the loop had made when it began."""

    def __init__(self, turns: Turns, *, busy: float = 0.0) -> None:
        self.turns = turns
        self.busy = busy
        self.seen: list[tuple[int, int]] = []
        self.done = asyncio.Event()
        self.expected = 0

    async def handle(self, message: Any, priority: Priority) -> None:
        self.seen.append((message.offset, self.turns.count))
        if self.busy:  # CPU-bound work: holds the loop as a decision does
            until = time.monotonic() + self.busy
            while time.monotonic() < until:
                pass
        if len(self.seen) >= self.expected:
            self.done.set()


@pytest.fixture
async def app() -> AsyncIterator[faust.App]:
    app = faust.App("test-inbox-turns", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
    app.flow_control.resume()
    yield app
    # The consumer (never started) made its thread's event loop when the agent first asked for it.
    consumer: Any = app.consumer
    consumer._thread.thread_loop.close()


def record(app: faust.App, offset: int) -> Message:
    return Message(TOPIC, 0, offset, 0.0, 0, [], b"u1", b"{}", None, generation_id=app.consumer_generation_id)


async def run(app: faust.App, inbox: Inbox, handler: Recorder, count: int) -> None:
    gate = PriorityGate(enabled=True)
    gate.track(Priority.HIGH, inbox.__len__)
    handler.expected = count
    agent = asyncio.create_task(process(app, inbox, Priority.HIGH, gate, handler))
    try:
        await asyncio.wait_for(handler.done.wait(), timeout=5)
    finally:
        agent.cancel()
        await asyncio.gather(agent, return_exceptions=True)


async def test_the_records_of_a_poll_go_through_without_the_loop_turning_between_them(app: faust.App) -> None:
    turns = Turns()
    inbox = Inbox()
    for offset in range(10):
        inbox.put(record(app, offset))
    handler = Recorder(turns)
    try:
        await run(app, inbox, handler, 10)
    finally:
        turns.stop()
    assert [offset for offset, _ in handler.seen] == list(range(10))
    assert len({turn for _, turn in handler.seen}) == 1  # one run: no other task ran in between
    assert not len(inbox)


async def test_the_loop_turns_once_the_agent_has_held_it_for_its_turn(app: faust.App) -> None:
    turns = Turns()
    inbox = Inbox()
    for offset in range(6):
        inbox.put(record(app, offset))
    handler = Recorder(turns, busy=TURN * 1.5)  # each record alone outlasts the turn
    try:
        await run(app, inbox, handler, 6)
    finally:
        turns.stop()
    started = [turn for _, turn in handler.seen]
    assert started == sorted(started)
    assert len(set(started)) == 6  # the loop turned before every record


async def test_a_record_arriving_while_the_agent_waits_is_handled_after_the_loop_turned(app: faust.App) -> None:
    turns = Turns()
    inbox = Inbox()
    handler = Recorder(turns)
    handler.expected = 2
    gate = PriorityGate(enabled=True)
    gate.track(Priority.HIGH, inbox.__len__)
    agent = asyncio.create_task(process(app, inbox, Priority.HIGH, gate, handler))
    try:
        inbox.put(record(app, 0))
        deadline = time.monotonic() + 5
        while not handler.seen:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.001)
        inbox.put(record(app, 1))
        await asyncio.wait_for(handler.done.wait(), timeout=5)
    finally:
        agent.cancel()
        await asyncio.gather(agent, return_exceptions=True)
        turns.stop()
    assert [offset for offset, _ in handler.seen] == [0, 1]
    assert handler.seen[1][1] > handler.seen[0][1]


class _ScriptedConsumer:
    """Faust's consumer as ``consumer_taking`` builds on it, handing out one scripted poll of mixed topics."""

    def __init__(self, poll: list[Message]) -> None:
        self._read_offset: dict[Any, int | None] = {}
        self.poll = poll

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        raise AssertionError("no hole in a scripted poll")

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Message]]:
        for message in self.poll:
            yield message.tp, message


async def test_request_records_are_handled_before_the_rest_of_their_poll_is_delivered(app: faust.App) -> None:
    # Faust's consumer delivers a poll's other records (the worker's log) one after another and
    # lets the loop run only every hundred: the requests taken early in the poll must not wait for them.
    inbox = Inbox()
    events = [
        Message("herald.events", 0, offset, 0.0, 0, [], b"u1", b"{}", None, generation_id=0) for offset in range(20)
    ]
    poll = [record(app, 0), record(app, 1), *events]
    consumer = consumer_yielding(consumer_taking(_ScriptedConsumer, {TOPIC: inbox.put}, TakeEpoch()))(poll)
    turns = Turns()
    handler = Recorder(turns)
    gate = PriorityGate(enabled=True)
    gate.track(Priority.HIGH, inbox.__len__)
    handler.expected = 2
    agent = asyncio.create_task(process(app, inbox, Priority.HIGH, gate, handler))
    await asyncio.sleep(0)  # the agent waits for its first record
    handled_when_delivered = []
    try:
        async for _, message in consumer.getmany(1.0):  # as Faust's drain: no yield of its own
            handled_when_delivered.append((message.offset, len(handler.seen)))
    finally:
        agent.cancel()
        await asyncio.gather(agent, return_exceptions=True)
        turns.stop()
    assert [offset for offset, _ in handler.seen] == [0, 1]
    assert handled_when_delivered == [(offset, 2) for offset in range(20)]
