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

import orjson
from prometheus_client import Counter, Histogram

from api.publisher import Encoded, Publisher
from engine.delivery import websocket_delivered, websocket_dropped
from schemas.codec import envelope_to_dict, format_time, parse_time
from schemas.envelope import Envelope
from schemas.ids import derived_id

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
LINGER = 0.02
"""Seconds the drain gathers receipts after the first one before appending them (the stack passes
``HERALD_WS_RECEIPT_LINGER_MS``, of the same default)."""
LINGER_RECEIPTS = 1000
"""Receipts waiting that end the linger at once."""

RECEIPTS_FAILED = Counter("websocket_receipts_failed_total", "Delivery receipts the broker did not take")


class Receipts:
    """Appends ``delivery.succeeded`` / ``delivery.deferred`` for this node; tracks what is in flight."""

    def __init__(
        self, publisher: Publisher | None, node_id: str, *, buffer: int = BUFFER, linger: float = LINGER
    ) -> None:
        self._publisher = publisher
        self._node_id = node_id
        self._buffer = buffer
        # Receipts are off the frame's path: the drain gathers them for ``linger`` seconds after the
        # first, so the broker gets a few large appends instead of one per loop turn (measured on
        # Tansu: its answers to the requests' fetches and the acceptances' appends came sooner).
        # A flush (a client's clean close) or a close ends the linger at once, as do LINGER_RECEIPTS.
        self._linger = linger
        self._now = asyncio.Event()
        # Writers hand receipts to one drain task and move on: a slow broker slows the
        # receipts, not the frames (until ``buffer`` receipts wait; then writers wait too).
        # The receipts waiting for the drain task are one batch: one future settles when all
        # of them are on the broker (or failed), and each user with a receipt in it waits on that.
        self._waiting: list[Envelope | Encoded] = []
        self._batch: asyncio.Future[None] | None = None
        self._batch_users: set[str] = set()
        self._in_flight: dict[str, set[asyncio.Future[None]]] = {}
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None
        self._metrics: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._delivered = DeliveredRecords(node_id)

    async def delivered(self, notifications: Iterable[dict[str, Any]], *, connection: str, via: str) -> None:
        """``notifications`` (client views) were written to ``connection``."""
        for env in self._receipts(notifications, connection, via):
            await self._append(env)

    def room(self) -> bool:
        """Whether receipts are taken without waiting (``delivered_now``)."""
        return len(self._waiting) < self._buffer

    def delivered_now(self, notifications: Iterable[dict[str, Any]], *, connection: str, via: str) -> None:
        """``delivered`` without waiting: for a writer that checked ``room()`` before writing."""
        for env in self._receipts(notifications, connection, via):
            self._take(env)

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
            if self._batch in pending:  # some of them still wait for the drain: end its linger
                self._now.set()
            await asyncio.wait(pending, timeout=within)

    async def close(self, *, within: float = 5.0) -> None:
        """Wait (bounded) for every queued receipt, then stop the drain task."""
        pending = {fut for futs in self._in_flight.values() for fut in futs}
        if pending:
            if self._waiting:
                self._now.set()
            await asyncio.wait(pending, timeout=within)
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer

    def _receipts(self, notifications: Iterable[dict[str, Any]], connection: str, via: str) -> list[Encoded]:
        now = datetime.now(UTC)
        now_text = format_time(now)
        write = self._delivered.record
        out = []
        for item in notifications:
            created = _created(item)
            priority = str(item.get("priority", ""))
            metrics = self._metrics.get((priority, via))
            if metrics is None:  # labels() takes a lock per call: each child is looked up once
                metrics = self._metrics[(priority, via)] = (
                    FRAMES_DELIVERED.labels(priority, via),
                    GATEWAY_LATENCY.labels(priority, via),
                )
            metrics[0].inc()
            metrics[1].observe(max(0.0, (now - created).total_seconds()))
            out.append(write(item, connection, via, created, now, now_text))
        return out

    async def _append(self, env: Envelope | Encoded) -> None:
        if self._publisher is None:
            return
        while len(self._waiting) >= self._buffer:
            self._room.clear()
            await self._room.wait()
        self._take(env)

    def _take(self, env: Envelope | Encoded) -> None:
        if self._publisher is None:
            return
        user = env.userid or ""
        batch = self._batch
        if batch is None:
            batch = self._batch = asyncio.get_running_loop().create_future()
        if user not in self._batch_users:
            self._batch_users.add(user)
            self._in_flight.setdefault(user, set()).add(batch)
        self._waiting.append(env)
        if len(self._waiting) >= LINGER_RECEIPTS:
            self._now.set()
        if self._drainer is None or self._drainer.done():
            # A fresh context: the drain outlives the request that started it, and must not
            # log that request's correlation id on every later receipt.
            self._drainer = asyncio.create_task(
                self._drain(self._publisher), name="receipts-drain", context=contextvars.Context()
            )
        self._wake.set()

    async def _drain(self, publisher: Publisher) -> None:
        while True:
            await self._wake.wait()
            if self._linger > 0 and not self._now.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._now.wait(), self._linger)
            self._now.clear()
            self._wake.clear()
            while self._waiting:
                envelopes, self._waiting = self._waiting, []
                batch = self._batch or asyncio.get_running_loop().create_future()
                users = self._batch_users
                self._batch, self._batch_users = None, set()
                self._room.set()
                settle = _Settle(self, batch, users)
                try:
                    # One record batch per partition: the producer's per-record send costs
                    # more than the receipt itself.
                    sending = await publisher.enqueue_many(envelopes)
                except Exception as exc:  # noqa: BLE001 - reported by _failed (log line + metric)
                    for env in envelopes:
                        _failed(env, exc)
                    sending = []
                for part in sending:
                    settle.count += 1
                    part.sent.add_done_callback(functools.partial(settle.done, part.envelopes))
                settle.sent_all()

    def _settled(self, batch: asyncio.Future[None], users: set[str]) -> None:
        if not batch.done():
            batch.set_result(None)
        for user in users:
            pending = self._in_flight.get(user)
            if pending is not None:
                pending.discard(batch)
                if not pending:
                    self._in_flight.pop(user, None)


class _Settle:
    """Counts a batch's receipts down to its future settling."""

    __slots__ = ("batch", "count", "owner", "sending", "users")

    def __init__(self, owner: Receipts, batch: asyncio.Future[None], users: set[str]) -> None:
        self.owner = owner
        self.batch = batch
        self.users = users
        self.count = 0
        self.sending = True

    def done(self, envelopes: list[Envelope | Encoded], sent: asyncio.Future[Any]) -> None:
        if sent.cancelled() or sent.exception() is not None:
            for env in envelopes:
                _failed(env, None if sent.cancelled() else sent.exception())
        self.count -= 1
        if not self.count and not self.sending:
            self.owner._settled(self.batch, self.users)

    def sent_all(self) -> None:
        self.sending = False
        if not self.count:
            self.owner._settled(self.batch, self.users)


def _failed(env: Envelope | Encoded, exc: BaseException | None) -> None:
    RECEIPTS_FAILED.inc()
    log.error("receipt not appended", extra={**_log_extra(env), "error": repr(exc)})


def _created(item: dict[str, Any]) -> datetime:
    raw = item.get("created_at")
    try:
        return parse_time(raw) if isinstance(raw, str) else datetime.now(UTC)
    except ValueError:
        return datetime.now(UTC)


def _log_extra(env: Envelope | Encoded) -> dict[str, Any]:
    return {
        "notification_id": env.subject,
        "user_id": env.userid,
        "event_type": env.type,
        "correlation_id": env.correlationid,
    }


class DeliveredRecords:
    """Writes a receipt's record (``encode(websocket_delivered(...))``, the same bytes) without building
    the event, its envelope and their dicts, which cost several times the rest of a receipt.

    The record's constant parts (attributes, ``dataschema`` if any, the data's fixed fields and their
    order) come from one receipt of this node written the general way; each receipt sets its own values
    in a copy. A property test holds it to the general path.
    """

    __slots__ = ("_data", "_doc", "_node", "_type")

    def __init__(self, node: str) -> None:
        at = datetime(2000, 1, 1, tzinfo=UTC)
        sample = {"id": "n", "user_id": "u", "priority": "high", "bulk_id": "b"}
        doc = envelope_to_dict(
            websocket_delivered(sample, node=node, connection="c", via="live", created_at=at, now=at)
        )
        self._doc = doc
        self._data: dict[str, Any] = doc["data"]
        self._type: str = doc["type"]
        self._node = node

    def record(
        self, item: dict[str, Any], connection: str, via: str, created: datetime, now: datetime, now_text: str
    ) -> Encoded:
        """``item`` (a client view) written to ``connection`` at ``now`` (``now_text``: ``format_time(now)``)."""
        notification_id = item["id"]
        user = item["user_id"]
        priority = item.get("priority")
        correlation = item.get("bulk_id")  # the request's correlation id (client views carry it)
        if not isinstance(correlation, str) or not correlation:
            correlation = notification_id
        data = self._data.copy()
        data["notification_id"] = notification_id
        data["user_id"] = user
        data["target"] = f"{self._node}/{connection}"
        data["latency_ms"] = round(max(0.0, (now - created).total_seconds() * 1000), 3)
        data["provider_id"] = via
        doc = self._doc.copy()
        doc["id"] = derived_id(notification_id, self._type, "websocket", self._node, connection)
        doc["time"] = now_text
        doc["subject"] = notification_id
        doc["userid"] = user
        if isinstance(priority, str):
            doc["priority"] = priority
        else:
            del doc["priority"]
        doc["correlationid"] = correlation
        doc["data"] = data
        return Encoded(self._type, user, notification_id, correlation, orjson.dumps(doc))
