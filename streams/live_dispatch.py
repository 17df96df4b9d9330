"""Live WebSocket hand-off in batches: one Redis round trip for the presence and the frames.

Agents submit each notification due on the WebSocket now and move on; one task takes
what was submitted since its last pass and

1. takes only frames whose log appends (their ``notification.accepted`` events) the
   broker has acknowledged, so a gateway's ``delivery.succeeded`` never reaches the log
   ahead of the acceptance it follows: the acknowledged front of a lane, in submission
   order, so a frame never waits for a later frame's acknowledgement, and each
   acknowledgement wakes the task (no frame waits for a batch in flight to be acked);
   a frame whose append is not acknowledged yet asks the producer (``push``) to send
   what it holds back for its linger now (``streams.lingering``): the frame waits on it;
2. reads the presence of every user of the batch and publishes every frame to the
   gateways holding its user, in one round trip (a script: ``RedisDispatcher``);
3. hands the batch, each item with the nodes that took it, to ``on_result`` (which
   records ``delivery.deferred`` for those no gateway took: the user is offline).

High-priority items have a lane of their own that is always served first when its front
is acknowledged, and other batches are smaller, so a backlog of low-priority frames
delays a high one by at most one small batch (a background batch is served only while
no high-priority frame is ready).

At-least-once holds because the worker's commits wait for this queue to drain
(``drained``, wired into the producer flush that Faust performs before every offset
commit): an input offset is never committed while its frame is still in the queue.
A batch that fails (Redis down) is retried with backoff and never dropped; the queue is
bounded, so a long outage slows the agents instead of growing memory.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Histogram

log = logging.getLogger(__name__)

DISPATCH_BATCH = Histogram(
    "websocket_dispatch_batch_size",
    "Notifications handed to the gateways per Redis round trip",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)
DISPATCH_FAILURES = Counter(
    "websocket_dispatch_failures_total", "Batches of live frames that failed and were retried (Redis unreachable)"
)


@dataclass(slots=True)
class Live:
    """One notification to push to the gateways holding its user."""

    user_id: str
    message: bytes
    """The pub/sub message (``{"user_id":..., "frame":...}``), rendered once by the submitter."""
    cause: Any
    """What ``on_result`` needs to record the outcome (the ``notification.accepted`` envelope)."""
    after: Sequence[Awaitable[Any]] = ()
    """Broker acknowledgements this frame must follow (the acceptance appended to the log)."""
    urgent: bool = False
    """High priority: dispatched before anything else waiting, in batches of its own."""
    reached: list[str] = field(default_factory=list)


class BatchDispatcher:
    """Port: publish many frames; return, per item, the gateway nodes that took it."""

    async def dispatch_many(self, items: Sequence[tuple[str, bytes]]) -> list[list[str]]:  # pragma: no cover
        raise NotImplementedError


Results = Callable[[Sequence[Live]], Awaitable[None]]


@dataclass(slots=True)
class _Lane:
    """Items of one priority class, processed in submission order."""

    pending: list[Live] = field(default_factory=list)
    submitted: int = 0
    completed: int = 0

    def waiting(self) -> int:
        return len(self.pending)


class LiveDispatch:
    """The batching queue in front of a ``BatchDispatcher``.

    ``push``: called when a frame is queued whose appends are not acknowledged yet, to send
    them without waiting for the producer's linger (``streams.lingering.lingering_sender``).
    """

    def __init__(
        self,
        dispatcher: Any,
        on_result: Results,
        *,
        max_pending: int = 5000,
        max_batch: int = 1000,
        max_background_batch: int = 250,
        retry_base: float = 0.1,
        retry_max: float = 5.0,
        push: Callable[[], None] | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._push = push
        self._on_result = on_result
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._max_background_batch = max_background_batch
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._urgent = _Lane()
        self._background = _Lane()
        self._in_batch = 0
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        """Start the dispatch task (idempotent)."""
        if self._task is None or self._task.done():
            # A fresh context: started while one record is handled, it serves every later one.
            self._task = asyncio.create_task(self._run(), name="websocket-live-dispatch", context=contextvars.Context())

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The dispatch task, for supervision."""
        return self._task

    async def submit(self, item: Live) -> None:
        """Queue ``item``; waits only while the queue is full (backpressure)."""
        self._check_alive()
        while self._urgent.waiting() + self._background.waiting() >= self._max_pending:
            self._space.clear()
            await self._space.wait()
            self._check_alive()
        waiting = False
        if item.after:
            # Futures, so readiness can be checked without awaiting; each one still pending
            # wakes the task when the broker answers.
            acks = [asyncio.ensure_future(ack) for ack in item.after]
            for ack in acks:
                if not ack.done():
                    ack.add_done_callback(self._acked)
                    waiting = True
            item.after = acks
        lane = self._urgent if item.urgent else self._background
        lane.pending.append(item)
        lane.submitted += 1
        if not waiting:  # else its acknowledgement wakes the task: nothing is ready before it
            self._wake.set()
        elif self._push is not None:
            # The producer would hold the append back for its linger; the frame waits on it.
            self._push()

    def _acked(self, _: Any) -> None:
        self._wake.set()

    async def drained(self) -> None:
        """Return once everything submitted before this call is published (and its result recorded).

        Items submitted meanwhile are not waited for, so a commit under steady load waits
        for one batch or two, never for the load to stop.
        """
        self._check_alive()
        urgent, background = self._urgent.submitted, self._background.submitted
        while self._urgent.completed < urgent or self._background.completed < background:
            waiter = asyncio.ensure_future(self._progress.wait())
            try:
                await asyncio.wait({waiter, self._require_task()}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            self._check_alive()

    async def close(self, *, within: float = 10.0) -> None:
        """Drain (bounded), then stop the task."""
        self._closing = True
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(self.drained(), within)
            except (TimeoutError, RuntimeError):
                pending = self._urgent.waiting() + self._background.waiting()
                log.warning("live dispatch closed with frames pending", extra={"pending": pending})
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _require_task(self) -> asyncio.Task[None]:
        self.start()
        if self._task is None:  # pragma: no cover - start() always sets it
            raise RuntimeError("websocket live dispatch not started")
        return self._task

    def _check_alive(self) -> None:
        task = self._task
        if task is not None and task.done() and not self._closing:
            exc = None if task.cancelled() else task.exception()
            raise RuntimeError(f"websocket live dispatch task died: {exc!r}")
        if task is None:
            self.start()

    async def _run(self) -> None:
        while True:
            lane, count = self._urgent, _ready(self._urgent.pending, self._max_batch)
            if not count:
                lane, count = self._background, _ready(self._background.pending, self._max_background_batch)
            if not count:
                # Nothing acknowledged yet (or nothing at all): a submit or an ack wakes us.
                # No await between the checks above and clear(): no wake-up is lost.
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = lane.pending[:count]
            del lane.pending[:count]
            self._space.set()
            await self._dispatch_until_done(batch)
            lane.completed += len(batch)
            # Wake every waiter of ``drained``; each checks its own target.
            self._progress.set()
            self._progress = asyncio.Event()

    async def _dispatch_until_done(self, batch: list[Live]) -> None:
        delay = self._retry_base
        # Every item's appends are acknowledged (``_ready``). A failed append fails the
        # agent's own send too (Faust's flush raises before the commit), so the input is
        # reprocessed: the frame may go out, never lost.
        for item in batch:
            item.after = ()
        while True:
            try:
                results = await self._dispatcher.dispatch_many([(i.user_id, i.message) for i in batch])
                for item, nodes in zip(batch, results, strict=True):
                    item.reached = nodes
                DISPATCH_BATCH.observe(len(batch))
            except asyncio.CancelledError:
                raise
            except Exception:
                DISPATCH_FAILURES.inc()
                log.exception("live dispatch failed; retrying", extra={"batch": len(batch), "retry_in": delay})
                await asyncio.sleep(delay)
                delay = min(self._retry_max, delay * 2)
                continue
            # Outside the retry: the frames are out; a failure here is a bug, not Redis.
            await self._on_result(batch)
            return


def _ready(pending: list[Live], limit: int) -> int:
    """How many items at the front of ``pending`` (at most ``limit``) have every append acknowledged."""
    count = 0
    for item in pending:
        if count == limit or not all(_done(ack) for ack in item.after):
            break
        count += 1
    return count


def _done(ack: Awaitable[Any]) -> bool:
    """Whether ``ack`` is a finished future (its exception, if any, counted as seen)."""
    if not (asyncio.isfuture(ack) and ack.done()):
        return False
    if not ack.cancelled():
        ack.exception()  # retrieved, as ``gather(return_exceptions=True)`` would
    return True
