"""One client WebSocket: a bounded send queue, one writer, at most one copy of each notification.

Frames never go to the socket from the code that produces them: they are collected and
written once per event-loop turn, every frame of the turn in one write (one system call
for a burst of frames), with their receipts. When that cannot be done at once (the socket's
buffer is full, a replay runs, the compressed protocol was negotiated, receipts are
backed up), frames are queued and a single writer task sends them in order. A client that
reads slower than frames arrive fills the queue and is closed with ``CLOSE_TOO_SLOW``
instead of growing memory.
While the missed-notification replay runs, live frames are held back (within the same
bound) and sent after it, so the client sees its backlog first, then live ones; a
notification already sent on this connection is never sent on it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import Counter

from engine import websocket_frames as frames
from engine.token_bucket import Bucket, BucketPolicy, take

log = logging.getLogger(__name__)

CLOSE_TOO_MANY_CONNECTIONS = 4008
"""Close code for a connection beyond the per-user limit: the new one is refused, existing ones stay."""
CLOSE_TOO_SLOW = 4009
"""Close code for a client whose send queue overflowed (it reads slower than it is sent)."""
CLOSE_UNAVAILABLE = 1013
"""Close code (try again later) when presence (Redis) cannot admit the connection."""
CLOSE_REPLAY_FAILED = 4011
"""Close code when the missed-notification replay could not be read; reconnecting retries it."""
CLOSE_TOKEN_EXPIRED = 4001
"""Close code at the token's ``exp``: the client reconnects with a fresh token."""

SEEN_IDS = 2048
"""Notification ids remembered per connection for de-duplication (oldest forgotten first)."""
READ_IDS = 2048
"""Notification ids read on a connection, remembered so that reading again appends nothing."""

SLOW_CLOSED = Counter("websocket_slow_clients_closed_total", "Connections closed because their send queue overflowed")

Written = Callable[["Connection", list[dict[str, Any]], str], Awaitable[None]]
"""Called after notifications were written: ``(connection, notifications, via)``."""

WRITE_BUFFER_LIMIT = 64 * 1024
"""Bytes waiting in the socket's buffer above which frames go through the queue (and its bound)."""


class Recorder(Protocol):
    """Takes the receipts of notifications written in an event-loop turn, without waiting."""

    def room(self) -> bool:
        """Whether ``delivered_now`` takes receipts now (else the writer task waits for room)."""
        ...

    def delivered_now(self, notifications: list[dict[str, Any]], *, connection: str, via: str) -> None:
        """``notifications`` were written to ``connection``."""
        ...


@dataclass(slots=True)
class Outgoing:
    """A queued frame: ``text`` ready to send, or a replay batch rendered at write time."""

    kind: str
    """``live``, ``replay`` or ``control``."""
    text: str = ""
    notifications: list[dict[str, Any]] = field(default_factory=list)
    more: bool = False


class Connection:
    """A client socket of ``user_id`` on this node."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        user_id: str,
        connection_id: str,
        *,
        queue_size: int,
        on_written: Written,
        frame_policy: BucketPolicy | None = None,
        request: web.BaseRequest | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.ws = ws
        self._request = request  # its transport is aborted if a slow client will not take the close
        self.user_id = user_id
        self.id = connection_id
        self.closing = False
        self._limit = queue_size
        self._queue: asyncio.Queue[Outgoing] = asyncio.Queue(queue_size)
        self._held: list[Outgoing] | None = []
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._on_written = on_written
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._busy = False
        self._frame_policy = frame_policy
        self._frames: Bucket | None = None
        self._read: OrderedDict[str, str] = OrderedDict()
        self._recorder = recorder
        # Written in this event-loop turn, by _flush: frames, in order, taken while the
        # queue is empty and the writer idle (so nothing queued can overtake them).
        self._pending: list[Outgoing] = []
        self._transport = request.transport if request is not None and recorder is not None else None
        # The compressed protocol (permessage-deflate) is aiohttp's to write.
        self._plain = not ws.compress

    def take_frame(self) -> float:
        """Count one client frame: 0 if within the connection's rate, else seconds until one is allowed."""
        if self._frame_policy is None:
            return 0.0
        taken = take(self._frames, self._frame_policy, now=time.monotonic())
        self._frames = taken.bucket
        return taken.retry_after_seconds

    def remember_read(self, notification_id: str, read_at: str) -> None:
        """``notification_id`` is read (on this or another connection): reading it again appends nothing."""
        self._read[notification_id] = read_at
        self._read.move_to_end(notification_id)
        if len(self._read) > READ_IDS:
            self._read.popitem(last=False)

    def read_at(self, notification_id: str) -> str | None:
        """When this connection saw ``notification_id`` read, if it did."""
        return self._read.get(notification_id)

    def start(self) -> None:
        """Start the writer task."""
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.id}")

    def offer(self, frame: Outgoing) -> bool:
        """Queue a live frame; ``False`` if this connection is closing or just overflowed."""
        if self.closing:
            return False
        if self._held is not None:
            if len(self._held) >= self._limit:
                self.overflow()
                return False
            self._held.append(frame)
            return True
        return self._put(frame)

    def control(self, frame: dict[str, Any]) -> None:
        """Queue a frame that is not a notification (pong, error, read confirmation)."""
        if not self.closing:
            self._put(Outgoing("control", text=frames.render(frame)))

    async def replayed(self, notifications: list[dict[str, Any]], *, more: bool) -> None:
        """Queue one ``missed_notifications`` batch, waiting for room (replay is paced by the client)."""
        if not self.closing:
            await self._queue.put(Outgoing("replay", notifications=notifications, more=more))

    async def end_replay(self) -> None:
        """Release live frames held during the replay, in arrival order."""
        while self._held:
            held, self._held = self._held, []
            for frame in held:
                if self.closing:
                    return
                await self._queue.put(frame)
        self._held = None

    def overflow(self) -> None:
        """The client cannot keep up: drop what is queued (it stays undelivered) and close with 4009."""
        if self.closing:
            return
        self.closing = True
        SLOW_CLOSED.inc()
        log.warning("websocket send queue full; closing slow client", extra={"user_id": self.user_id})
        self._closer = asyncio.create_task(self._close_slow())

    async def stop(self) -> None:
        """Stop writing; queued frames are dropped (they were never delivered, so they replay later).

        A frame being written is finished first, with its receipt: a write must not be
        cut between the socket and the record of it.
        """
        self.closing = True
        writer = self._writer
        if writer is not None:
            if self._busy:
                await asyncio.wait([writer], timeout=2)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        if self._closer is not None:
            # Not cancelled: it ends on its own (close frame taken, or the transport aborted).
            await asyncio.wait([self._closer], timeout=10)

    def _put(self, frame: Outgoing) -> bool:
        if self._pending or self._writable():
            self._pending.append(frame)
            if len(self._pending) == 1:
                asyncio.get_running_loop().call_soon(self._flush)
            elif len(self._pending) >= self._limit:
                self._flush()  # the turn's frames stay within the queue's bound
            return True
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.overflow()
            return False
        return True

    async def _close_slow(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
        try:
            # The close frame queues behind what the socket already buffered; give the
            # client a moment to read up to it, then cut the connection.
            await asyncio.wait_for(self.ws.close(code=CLOSE_TOO_SLOW, message=b"send queue full: client too slow"), 5)
        except (TimeoutError, ConnectionError, RuntimeError) as exc:
            log.info(
                "slow client did not take the close frame; aborting",
                extra={"user_id": self.user_id, "error": repr(exc)},
            )
        transport = self._request.transport if self._request is not None else None
        if transport is not None and not transport.is_closing():
            transport.abort()

    def _writable(self) -> bool:
        """Whether frames can be written in this turn: nothing queued before them, room everywhere."""
        transport = self._transport
        return (
            transport is not None
            and self._plain
            and self._held is None
            and not self._busy
            and self._queue.empty()
            and not transport.is_closing()
            and transport.get_write_buffer_size() < WRITE_BUFFER_LIMIT
            and self._recorder is not None
            and self._recorder.room()
        )

    def _flush(self) -> None:
        """Write the turn's frames in one go and record their receipts (no task, no await)."""
        pending, self._pending = self._pending, []
        transport, recorder = self._transport, self._recorder
        if self.closing or not pending or transport is None or recorder is None:
            return  # dropped like queued frames: never delivered, so they replay later
        if transport.is_closing() or self.ws.closed:
            self.closing = True
            return
        data = []
        written: list[dict[str, Any]] = []
        for frame in pending:
            text, notifications, _ = self._render(frame)
            if text is None:
                continue
            data.append(text_frame(text.encode()))
            written.extend(notifications)
        if not data:
            return
        try:
            transport.write(b"".join(data))
        except (ConnectionError, RuntimeError) as exc:
            log.info("websocket write failed; connection closing", extra={"user_id": self.user_id, "error": repr(exc)})
            self.closing = True
            return
        if written:
            recorder.delivered_now(written, connection=self.id, via="live")

    async def _write_loop(self) -> None:
        while not self.closing:
            frame = await self._queue.get()
            text, notifications, via = self._render(frame)
            if text is None:
                continue
            self._busy = True
            try:
                await self.ws.send_str(text)
                if notifications:
                    await self._on_written(self, notifications, via)
            except (ConnectionError, RuntimeError) as exc:
                log.info(
                    "websocket write failed; connection closing", extra={"user_id": self.user_id, "error": repr(exc)}
                )
                self.closing = True
            finally:
                self._busy = False

    def _render(self, frame: Outgoing) -> tuple[str | None, list[dict[str, Any]], str]:
        if frame.kind == "control":
            return frame.text, [], ""
        fresh = [n for n in frame.notifications if self._first_time(n["id"])]
        if frame.kind == "live":
            return (frame.text, fresh, "live") if fresh else (None, [], "")
        if not fresh and frame.more:
            return None, [], ""  # a batch fully sent live already; the final one always goes (it ends the replay)
        return frames.render(frames.missed_notifications(fresh, more=frame.more)), fresh, "replay"

    def _first_time(self, notification_id: str) -> bool:
        if notification_id in self._seen:
            return False
        self._seen[notification_id] = None
        if len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)
        return True


_HEADER_16 = struct.Struct("!BBH").pack
_HEADER_64 = struct.Struct("!BBQ").pack


def text_frame(payload: bytes) -> bytes:
    """A server's (unmasked, uncompressed, final) WebSocket text frame of ``payload`` (RFC 6455 5.2)."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return _HEADER_16(0x81, 126, size) + payload
    return _HEADER_64(0x81, 127, size) + payload
