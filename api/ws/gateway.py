"""WebSocket gateway: ``/ws/notifications?token=JWT[&since=ID]``.

On connect: admit (at most ``ws_max_connections_per_user`` over the cluster, the next is
refused with 4008), join presence, replay what the user missed as
``missed_notifications`` batches, then stream live ``notification`` frames. Every
notification written to a socket is recorded as ``delivery.succeeded`` by this node.
The socket is closed with 4001 at the token's ``exp``; client frames are rate-limited per
connection. Protocol and close codes: docs/websocket.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web
from prometheus_client import Gauge

from api.auth import TokenVerifier
from api.ws.connection import (
    CLOSE_REPLAY_FAILED,
    CLOSE_TOKEN_EXPIRED,
    CLOSE_TOO_MANY_CONNECTIONS,
    CLOSE_UNAVAILABLE,
    Connection,
    Outgoing,
)
from api.ws.presence import Presence
from api.ws.receipts import Receipts
from api.ws.replay import Replay
from engine import websocket_frames as frames
from engine.delivery import read_over_websocket
from engine.settings import Settings
from engine.token_bucket import BucketPolicy
from projections.inbox import Inbox
from schemas.errors import InvalidMessage, MalformedJSON
from schemas.limits import MAX_ID_LENGTH, parse_json

log = logging.getLogger(__name__)

ACTIVE_CONNECTIONS = Gauge("active_websocket_connections", "Open WebSocket connections on this node")

MAX_CLIENT_FRAME = 16 * 1024
"""Largest frame a client may send (its frames are tiny: ping, ack, read)."""


class Hub:
    """All WebSocket connections of this gateway node, by user."""

    def __init__(
        self,
        settings: Settings,
        verifier: TokenVerifier,
        presence: Presence,
        *,
        receipts: Receipts | None = None,
        replay: Replay | None = None,
        inbox: Inbox | None = None,
    ) -> None:
        self._settings = settings
        self._verifier = verifier
        self._presence = presence
        self._receipts = receipts or Receipts(None, presence.node_id)
        self._replay = replay
        self._inbox = inbox
        self._connections: dict[str, dict[str, Connection]] = {}
        self.node_id = presence.node_id
        self.presence = presence
        self.settings = settings
        self._frame_policy = BucketPolicy(rate=settings.ws_client_frame_rate, burst=settings.ws_client_frame_burst)

    async def start(self) -> None:
        """Start receiving frames addressed to this node."""
        await self._presence.start(self.deliver_remote, self._held, self._resync)

    async def _resync(self) -> None:
        """The node's frame channel was lost and is back: every client resumes.

        Frames published meanwhile reached nobody (those notifications were recorded as
        deferred) and a restarted Redis forgot this node's presence, so the open sockets
        would silently miss what was sent in the gap. Closed with 1013, clients reconnect
        with ``since`` and the replay sends exactly what they missed.
        """
        count = self.connection_count()
        log.warning("live feed interrupted: asking every client to resume", extra={"connections": count})

        async def resume(conn: Connection) -> None:
            await conn.stop()
            await conn.ws.close(code=CLOSE_UNAVAILABLE, message=b"live feed interrupted; reconnect with since")

        conns = [conn for by_id in list(self._connections.values()) for conn in list(by_id.values())]
        await asyncio.gather(*(resume(conn) for conn in conns), return_exceptions=True)

    async def close(self) -> None:
        """Close every connection, leave presence, and get the last receipts to the broker."""
        await self.disconnect_all()
        await self._presence.close()
        await self._receipts.close()

    async def disconnect_all(self, app: web.Application | None = None) -> None:
        """Close every socket with 1001 (the HTTP server's shutdown hook: clients reconnect elsewhere)."""
        for by_id in list(self._connections.values()):
            for conn in list(by_id.values()):
                await conn.stop()
                await conn.ws.close(code=1001, message=b"server shutting down")

    def connection_count(self, user_id: str | None = None) -> int:
        """Open connections here, of ``user_id`` or of everyone."""
        if user_id is not None:
            return len(self._connections.get(user_id, ()))
        return sum(len(by_id) for by_id in self._connections.values())

    async def deliver_local(self, user_id: str, frame: dict[str, Any], text: str | None = None) -> int:
        """Queue ``frame`` on every connection of ``user_id`` here; return how many took it.

        ``text``: the frame already rendered (by the worker), sent as it is.
        """
        return self._offer(user_id, frame, text, frames.notification_of(frame))

    async def deliver_remote(self, user_id: str, frame: dict[str, Any], text: str | None = None) -> int:
        """A frame from the sink via Redis: deliver, or record that the user had just left."""
        carried = frames.notification_of(frame)
        taken = self._offer(user_id, frame, text, carried)
        if not taken and carried is not None:
            await self._receipts.dropped(carried)
        return taken

    def _offer(self, user_id: str, frame: dict[str, Any], text: str | None, carried: dict[str, Any] | None) -> int:
        by_id = self._connections.get(user_id)
        if not by_id:
            return 0
        if text is None:
            text = frames.render(frame)
        out = (
            Outgoing("control", text=text) if carried is None else Outgoing("live", text=text, notifications=[carried])
        )
        if len(by_id) == 1:
            return int(next(iter(by_id.values())).offer(out))
        return sum(conn.offer(out) for conn in list(by_id.values()))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /ws/notifications?token=JWT[&since=ID]``."""
        principal = self._verifier.from_websocket(request)  # 401 problem+json before the upgrade
        since = request.query.get("since") or None
        if since is not None and len(since) > 200:
            since = "?"  # no notification id is that long: answered as an unknown cursor
        ws = web.WebSocketResponse(
            heartbeat=self._settings.ws_heartbeat_seconds, autoclose=False, max_msg_size=MAX_CLIENT_FRAME
        )
        await ws.prepare(request)
        user_id = principal.subject
        conn_id = secrets.token_hex(6)
        try:
            admitted = await self._presence.join(user_id, conn_id, self._settings.ws_max_connections_per_user)
        except Exception:  # presence down: tell the client to come back rather than hang
            log.exception("websocket refused: presence unavailable", extra={"user_id": user_id})
            await ws.close(code=CLOSE_UNAVAILABLE, message=b"presence unavailable; reconnect later")
            return ws
        if not admitted:
            limit = self._settings.ws_max_connections_per_user
            log.info("websocket refused: connection limit", extra={"user_id": user_id})
            await ws.close(code=CLOSE_TOO_MANY_CONNECTIONS, message=f"at most {limit} connections per user".encode())
            return ws
        conn = Connection(
            ws,
            user_id,
            conn_id,
            queue_size=self._settings.ws_send_queue_size,
            on_written=self._written,
            frame_policy=self._frame_policy,
            request=request,
            recorder=self._receipts,
        )
        self._connections.setdefault(user_id, {})[conn_id] = conn
        ACTIVE_CONNECTIONS.inc()
        conn.start()
        log.info("websocket connected", extra={"user_id": user_id})
        replaying = asyncio.create_task(self._run_replay(conn, since), name=f"ws-replay-{conn_id}")
        expiring = asyncio.create_task(self._expire(conn, principal.expires_at), name=f"ws-expiry-{conn_id}")
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_client_frame(conn, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
                else:
                    conn.control(frames.error("text frames only"))
        finally:
            for task in (replaying, expiring):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await conn.stop()
            # Receipts of what this connection got are on the broker before the close is
            # answered: a client reconnecting right after is not replayed them again.
            await self._receipts.flush(user_id)
            by_id = self._connections.get(user_id, {})
            by_id.pop(conn_id, None)
            if not by_id:
                self._connections.pop(user_id, None)
            try:
                await self._presence.leave(user_id, conn_id, last_here=not by_id)
            except Exception:  # the slot then expires with the TTL; the close must finish
                log.exception("leaving presence failed", extra={"user_id": user_id})
            if not ws.closed:
                await ws.close()
            ACTIVE_CONNECTIONS.dec()
            log.info("websocket disconnected", extra={"user_id": user_id, "close_code": ws.close_code})
        return ws

    async def _run_replay(self, conn: Connection, since: str | None) -> None:
        try:
            if self._replay is not None:
                await self._replay.catch_up(conn.user_id)
                after = await self._replay.cursor(conn.user_id, since) if since else None
                if since and after is None:
                    conn.control(frames.error("unknown 'since' id; replaying undelivered notifications"))
                async for items, more in self._replay.pages(conn.user_id, after):
                    await conn.replayed(items, more=more)
            else:
                await conn.replayed([], more=False)
            await conn.end_replay()
        except Exception:
            log.exception("missed-notification replay failed", extra={"user_id": conn.user_id})
            await conn.stop()
            await conn.ws.close(code=CLOSE_REPLAY_FAILED, message=b"replay unavailable; reconnect")

    async def _expire(self, conn: Connection, expires_at: float) -> None:
        """Close the socket when its token expires: a token is checked at connect, so it must not outlive that."""
        if expires_at <= 0:
            return
        await asyncio.sleep(max(0.0, expires_at - time.time()))
        log.info("websocket closed: token expired", extra={"user_id": conn.user_id})
        await conn.stop()
        try:
            await conn.ws.close(code=CLOSE_TOKEN_EXPIRED, message=b"token expired; reconnect with a new token")
        except (ConnectionError, RuntimeError) as exc:  # the peer is gone already; the handler cleans up
            log.info("expired websocket was already gone", extra={"user_id": conn.user_id, "error": repr(exc)})

    async def _written(self, conn: Connection, notifications: list[dict[str, Any]], via: str) -> None:
        await self._receipts.delivered(notifications, connection=conn.id, via=via)

    def _held(self) -> list[tuple[str, str]]:
        return [(user, conn_id) for user, by_id in self._connections.items() for conn_id in by_id]

    async def _on_client_frame(self, conn: Connection, data: str) -> None:
        wait = conn.take_frame()
        if wait > 0:
            # Dropped unparsed: a flood costs one small error frame each, never an event-log record.
            conn.control(frames.error("rate limited: frame ignored", retry_after=wait))
            return
        try:
            frame = parse_json(data)  # bounded: depth, numbers, duplicate keys, lone surrogates
        except MalformedJSON:
            conn.control(frames.error("malformed JSON"))
            return
        except InvalidMessage as exc:
            conn.control(frames.error(exc.reason))
            return
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind == "ping":
            conn.control(frames.pong())
        elif kind in ("ack", "read"):
            notification_id = frame.get("id")
            if not isinstance(notification_id, str) or not notification_id or len(notification_id) > MAX_ID_LENGTH:
                conn.control(frames.error(f"{kind} needs a notification 'id'"))
            elif kind == "read":
                await self._read(conn, notification_id)
            # ack: delivery is recorded when the frame is written; nothing more to do.
        else:
            conn.control(frames.error(f"unsupported frame type {kind!r}"))

    async def _read(self, conn: Connection, notification_id: str) -> None:
        if self._inbox is None or self._replay is None:
            conn.control(frames.error("read is not available on this gateway", id=notification_id))
            return
        already = conn.read_at(notification_id)
        if already is not None:  # read on this connection before: nothing more to record
            conn.control(frames.read(notification_id, already))
            return
        known, read_at = await self._inbox.read_state(conn.user_id, notification_id)
        if not known:
            # It may have just been delivered live, ahead of the projector: wait for it once.
            await self._replay.catch_up(conn.user_id)
            known, read_at = await self._inbox.read_state(conn.user_id, notification_id)
            if not known:
                conn.control(frames.error("no such notification", id=notification_id))
                return
        if read_at is not None:  # already read (REST, another socket): the log has that fact once
            stamp = _stamp(read_at)
            conn.remember_read(notification_id, stamp)
            conn.control(frames.read(notification_id, stamp))
            return
        now = datetime.now(UTC)
        await self._receipts.append(read_over_websocket(notification_id, conn.user_id, now=now))
        stamp = _stamp(now)
        confirmation = frames.read(notification_id, stamp)
        for other in list(self._connections.get(conn.user_id, {}).values()):
            other.remember_read(notification_id, stamp)
            other.control(confirmation)


def _stamp(at: datetime) -> str:
    aware = at if at.tzinfo is not None else at.replace(tzinfo=UTC)  # SQLite hands back naive UTC
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")
