"""The gateway's facts for the event log: what it wrote to which socket, what it could not.

The gateway, not the sink, records a WebSocket delivery: only the node that wrote the
frame to a socket knows it happened. Receipts leave in producer batches; a connection
waits for its own before answering a client's close, so a client that reconnects right
after a clean close is never replayed what it already has.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Histogram

from api.publisher import Publisher
from engine.delivery import websocket_delivered, websocket_dropped
from schemas.codec import parse_time
from schemas.envelope import Envelope

log = logging.getLogger(__name__)

FRAMES_DELIVERED = Counter(
    "websocket_notifications_delivered_total",
    "Notifications written to a WebSocket by this gateway",
    ["priority", "via"],
)
GATEWAY_LATENCY = Histogram(
    "websocket_delivery_latency_seconds",
    "Request time to the frame written on a socket",
    ["priority", "via"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
BUFFER = 65536
"""Receipts waiting for the broker before writers wait too."""

RECEIPTS_FAILED = Counter("websocket_receipts_failed_total", "Delivery receipts the broker did not take")


class Receipts:
    """Appends ``delivery.succeeded`` / ``delivery.deferred`` for this node; tracks what is in flight."""

    def __init__(self, publisher: Publisher | None, node_id: str, *, buffer: int = BUFFER) -> None:
        self._publisher = publisher
        self._node_id = node_id
        self._in_flight: dict[str, set[asyncio.Future[None]]] = {}
        # Writers hand receipts to one drain task and move on: a slow broker slows the
        # receipts, not the frames (until ``buffer`` receipts wait; then writers wait too).
        self._queue: asyncio.Queue[tuple[Envelope, asyncio.Future[None]]] = asyncio.Queue(buffer)
        self._drainer: asyncio.Task[None] | None = None

    async def delivered(self, notifications: Iterable[dict[str, Any]], *, connection: str, via: str) -> None:
        """``notifications`` (client views) were written to ``connection``."""
        now = datetime.now(UTC)
        for item in notifications:
            created = _created(item)
            priority = str(item.get("priority", ""))
            FRAMES_DELIVERED.labels(priority, via).inc()
            GATEWAY_LATENCY.labels(priority, via).observe(max(0.0, (now - created).total_seconds()))
            env = websocket_delivered(
                item, node=self._node_id, connection=connection, via=via, created_at=created, now=now
            )
            await self._append(env)

    async def dropped(self, notification: dict[str, Any]) -> None:
        """A frame reached this node after the user's last socket here closed: left for replay."""
        await self._append(websocket_dropped(notification, node=self._node_id, now=datetime.now(UTC)))

    async def append(self, env: Envelope) -> None:
        """Any other fact of the gateway (``notification.read`` from a client)."""
        await self._append(env)

    async def flush(self, user_id: str, *, within: float = 5.0) -> None:
        """Wait until every receipt of ``user_id`` queued so far is on the broker (or failed)."""
        pending = list(self._in_flight.get(user_id, ()))
        if pending:
            await asyncio.wait(pending, timeout=within)

    async def close(self, *, within: float = 5.0) -> None:
        """Wait (bounded) for every queued receipt, then stop the drain task."""
        pending = [fut for futs in self._in_flight.values() for fut in futs]
        if pending:
            await asyncio.wait(pending, timeout=within)
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer

    async def _append(self, env: Envelope) -> None:
        if self._publisher is None:
            return
        user = env.userid or ""
        settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._in_flight.setdefault(user, set()).add(settled)
        settled.add_done_callback(lambda done: self._settled(user, env, done))
        if self._drainer is None or self._drainer.done():
            # A fresh context: the drain outlives the request that started it, and must not
            # log that request's correlation id on every later receipt.
            self._drainer = asyncio.create_task(
                self._drain(self._publisher), name="receipts-drain", context=contextvars.Context()
            )
        await self._queue.put((env, settled))

    async def _drain(self, publisher: Publisher) -> None:
        while True:
            env, settled = await self._queue.get()
            try:
                sent = await publisher.enqueue(env)
            except Exception as exc:  # noqa: BLE001 - reported by _settled (log line + metric)
                settled.set_exception(exc)
                continue
            sent.add_done_callback(functools.partial(_chain, target=settled))

    def _settled(self, user: str, env: Envelope, fut: asyncio.Future[None]) -> None:
        pending = self._in_flight.get(user)
        if pending is not None:
            pending.discard(fut)
            if not pending:
                self._in_flight.pop(user, None)
        if fut.cancelled() or fut.exception() is not None:
            RECEIPTS_FAILED.inc()
            log.error(
                "receipt not appended",
                extra={**_log_extra(env), "error": repr(None if fut.cancelled() else fut.exception())},
            )


def _chain(source: asyncio.Future[Any], *, target: asyncio.Future[None]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif (exc := source.exception()) is not None:
        target.set_exception(exc)
    else:
        target.set_result(None)


def _created(item: dict[str, Any]) -> datetime:
    raw = item.get("created_at")
    try:
        return parse_time(raw) if isinstance(raw, str) else datetime.now(UTC)
    except ValueError:
        return datetime.now(UTC)


def _log_extra(env: Envelope) -> dict[str, Any]:
    return {
        "notification_id": env.subject,
        "user_id": env.userid,
        "event_type": env.type,
        "correlation_id": env.correlationid,
    }
