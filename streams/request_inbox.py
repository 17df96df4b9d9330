"""Request records go from the consumer to their ingest agent without Faust's per-record machinery.

Faust hands each fetched record through two tasks, the conductor, the agent's channel
queue and its stream (events, sensors, acks) before the agent sees it: about an eighth
of the worker's CPU per request in a bulk. The worker's consumer instead puts each
request record in the inbox of the one ingest agent of its topic
(``streams.internals.consumer_taking``), and the agent takes them from there in fetch
order. The agent is still a Faust agent on its topic (subscription, assignment,
supervision), the admission table is still a Faust table written in the record's
partition (the record is made the current event while it is processed), and:

- a record is acked only once its processing has finished, so the commit guard
  (``streams.internals.committable_offset``) never commits past one not finished;
- at a rebalance Faust clears its agents' buffers (``app.flow_control``): the inboxes
  are cleared with them, and a record of an older consumer generation, or one taken
  while the flow is stopped, is neither processed nor acked (it is read again from the
  committed offset, by this worker or the partition's new owner);
- the priority gate (``streams.priority_gate``) counts an inbox as the agent's buffer
  and is asked before every record, as before; the consumer's priority poll
  (``streams.priority_poll``) stops polling a priority whose inbox holds a poll's worth.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, Protocol

import faust

from engine.priority import Priority
from streams.internals import reset_current_event, set_current_event
from streams.metrics import PRIORITY_WAITS
from streams.priority_gate import PriorityGate


class Inbox:
    """The fetched records of one request topic not processed yet, in fetch order."""

    __slots__ = ("__weakref__", "_ready", "_records")

    def __init__(self) -> None:
        self._records: deque[Any] = deque()
        self._ready: asyncio.Event | None = None

    def put(self, message: Any) -> None:
        """Keep a fetched record (the consumer's taker: never blocks)."""
        self._records.append(message)
        ready = self._ready
        if ready is not None and not ready.is_set():
            ready.set()

    def clear(self) -> None:
        """Forget every record not started (``app.flow_control`` calls it at a rebalance)."""
        self._records.clear()

    def __len__(self) -> int:
        return len(self._records)

    async def first(self) -> Any:
        """The oldest record, left in the inbox (it still counts as buffered); waits for one."""
        records = self._records
        while not records:
            if self._ready is None:
                self._ready = asyncio.Event()
            self._ready.clear()
            await self._ready.wait()
        return records[0]

    def take(self, message: Any) -> bool:
        """Remove ``message`` if it is still the oldest record (not cleared meanwhile)."""
        records = self._records
        if records and records[0] is message:
            records.popleft()
            return True
        return False


class Handler(Protocol):
    """What processes one request record (``streams.ingest.Ingest``)."""

    async def handle(self, message: faust.types.Message, priority: Priority) -> None: ...


async def process(app: faust.App, inbox: Inbox, priority: Priority, gate: PriorityGate, handler: Handler) -> None:
    """Process the records of ``inbox`` one at a time, for ever (the body of the priority's ingest agent).

    ``handler.handle(message, priority)`` must not raise for a record's content: whatever it
    raises stops the agent (and the worker, ``herald.supervisor``) with the record unacked.
    """
    app.flow_control.manage_queue(inbox)  # type: ignore[arg-type]  # cleared with Faust's own buffers
    consumer = app.consumer
    unacked = consumer.unacked
    inbound = app.monitor.stream_inbound_time  # Faust's livelock check reads it per partition
    flow = app.flow_control
    monotonic = time.monotonic
    sleep = asyncio.sleep
    while True:
        await sleep(0)  # as Faust's stream: the loop runs between records (fetches, acks, dispatch)
        message = await inbox.first()
        if await gate.wait_turn(priority):
            PRIORITY_WAITS.labels(priority.value).inc()
        with gate.busy(priority):
            if not inbox.take(message):
                continue  # cleared while this agent waited its turn: a rebalance
            if not flow.is_active() or message.generation_id != app.consumer_generation_id:
                continue  # taken before a rebalance: read again from the committed offset
            inbound[message.tp] = monotonic()
            unacked.add(message)  # a rebalance waits for it (Consumer.wait_empty)
            token, event = set_current_event(app, message)
            try:
                await handler.handle(message, priority)
            finally:
                reset_current_event(token)
                del event
            consumer.ack(message)
