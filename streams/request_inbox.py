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
- a record taken before the consumer was last moved (a rebalance, the seek back to the
  committed offsets at its end) is dead: neither processed nor acked, it is read again
  from the committed offset, by this worker or the partition's new owner; the inboxes
  drop their dead records when Faust clears its agents' buffers (``app.flow_control``, as
  it suspends and resumes the flow). A live record stays: Faust resumes the flow, and
  clears, after the seek that ends a rebalance, and also mid-rebalance while it reads
  its tables' changelogs, when the consumer may already have handed out records
  (cleared with them, they were never read again, and a stale poll recorded them as a
  hole the commit guard then committed past: the fault suite's lost requests);
- a record of an older consumer generation, or one taken while the flow is stopped,
  is not processed either (as Faust's stream skips one);
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
from streams.internals import TakeEpoch, reset_current_event, set_current_event
from streams.metrics import PRIORITY_WAITS
from streams.priority_gate import PriorityGate

TURN = 0.003
"""Seconds an agent keeps the event loop for the records already in its inbox before letting it run.

A record's own processing takes a fraction of a millisecond, but with a turn of the loop before
each one (the rest of the poll, the producer, the live dispatch, the other agents: often several
ms each on a busy worker) a record behind others in its inbox waited one turn per record ahead
of it. Within ``TURN`` the records of a poll go through in one go; the loop still runs between
such runs, so other work (and another priority's agent) waits at most about ``TURN``."""


class Inbox:
    """The fetched records of one request topic not processed yet, in fetch order.

    Each record is kept with the consumer's ``TakeEpoch`` when it was taken; once the
    consumer has been moved since (a seek or a rebalance, ``streams.internals.consumer_taking``)
    the record is dead: it is read again from the consumer's new position, so it is neither
    handed out nor counted for long (the next ``first`` or ``clear`` drops it).
    """

    __slots__ = ("__weakref__", "_epoch", "_ready", "_records")

    def __init__(self, epoch: TakeEpoch | None = None) -> None:
        self._epoch = epoch if epoch is not None else TakeEpoch()
        self._records: deque[tuple[int, Any]] = deque()
        self._ready: asyncio.Event | None = None

    def put(self, message: Any) -> None:
        """Keep a fetched record (the consumer's taker: never blocks)."""
        self._records.append((self._epoch.value, message))
        ready = self._ready
        if ready is not None and not ready.is_set():
            ready.set()

    def clear(self) -> None:
        """Forget the dead records (``app.flow_control`` calls it as it suspends and resumes the flow).

        A record taken since the consumer's last move stays: Faust also clears its buffers when
        it resumes the flow, mid-rebalance and at its end, after the consumer has been moved
        back and may have taken records again; those are read nowhere else.
        """
        records = self._records
        now = self._epoch.value
        if records and (records[0][0] != now or records[-1][0] != now):
            live = [record for record in records if record[0] == now]
            records.clear()  # in place: ``first`` may be waiting on this deque
            records.extend(live)

    def __len__(self) -> int:
        return len(self._records)

    async def first(self) -> Any:
        """The oldest live record, left in the inbox (it still counts as buffered); waits for one."""
        records = self._records
        epoch = self._epoch
        while True:
            while records and records[0][0] != epoch.value:
                records.popleft()
            if records:
                return records[0][1]
            if self._ready is None:
                self._ready = asyncio.Event()
            self._ready.clear()
            await self._ready.wait()

    def take(self, message: Any) -> bool:
        """Remove ``message`` if it is still the oldest record and live (not cleared nor dead meanwhile)."""
        records = self._records
        if records and records[0][1] is message:
            taken_in, _ = records.popleft()
            return taken_in == self._epoch.value
        return False


def consumer_yielding(base: type[Any]) -> type[Any]:
    """``base`` (a Faust consumer class handing request records to inboxes: ``streams.internals.consumer_taking``)
    letting the event loop run as soon as a poll has put request records in the inboxes.

    Faust's consumer hands the rest of a poll (the worker's log, the sinks' work) to its agents
    one record after another and lets the loop run only every hundred records, so a request
    record put in its inbox early in a poll waited for the whole rest of it before its agent
    could start (a few ms at 500 notifications a second). Here, before the first other record
    that follows request records taken, the loop runs once: the agents take what their inboxes
    hold (``process``: in one go), then the poll goes on.
    """

    class YieldingConsumer(base):  # type: ignore[misc]
        # Faust's signature, hence ``timeout``.
        async def getmany(self, timeout: float) -> Any:  # noqa: ASYNC109
            taken = self.taken
            async for tp, message in super().getmany(timeout):
                if self.taken != taken:
                    taken = self.taken
                    await asyncio.sleep(0)
                yield tp, message

    return YieldingConsumer


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
    turn = monotonic()
    while True:
        if not inbox or monotonic() - turn >= TURN:
            # The loop runs between runs of records (fetches, acks, the live dispatch, other agents).
            await sleep(0)
            message = await inbox.first()
            turn = monotonic()
        else:
            message = await inbox.first()
        if gate.may_wait(priority) and await gate.wait_turn(priority):
            PRIORITY_WAITS.labels(priority.value).inc()
        gate.started(priority)  # gate.busy(priority), without a context manager per record
        try:
            if not inbox.take(message):
                continue  # cleared, or dead, while this agent waited its turn: read again
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
        finally:
            gate.finished(priority)
