"""WebSocket gateway: authenticated connections, per-user limits, live frames, ping/pong."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web
from prometheus_client import Gauge

from api.auth import TokenVerifier
from api.presence import Presence
from api.problems import Problem
from engine.settings import Settings

log = logging.getLogger(__name__)

ACTIVE_CONNECTIONS = Gauge("active_websocket_connections", "Open WebSocket connections on this node")

CLOSE_TOO_MANY_CONNECTIONS = 4008
"""Close code sent to a connection beyond the per-user limit (the new one is refused)."""


class Hub:
    """All WebSocket connections of this gateway node, by user."""

    def __init__(self, settings: Settings, verifier: TokenVerifier, presence: Presence) -> None:
        self._settings = settings
        self._verifier = verifier
        self._presence = presence
        self._connections: dict[str, list[web.WebSocketResponse]] = {}

    async def start(self) -> None:
        """Start receiving frames addressed to this node."""
        await self._presence.start(self.deliver_local, lambda: self._connections.keys())

    async def close(self) -> None:
        """Close every connection and leave presence."""
        await self._presence.close()
        for sockets in list(self._connections.values()):
            for ws in list(sockets):
                await ws.close(code=1001, message=b"server shutting down")

    def connection_count(self, user_id: str) -> int:
        """Open connections of ``user_id`` on this node."""
        return len(self._connections.get(user_id, ()))

    async def deliver_local(self, user_id: str, frame: dict[str, Any]) -> int:
        """Send ``frame`` to every connection of ``user_id`` here; return how many took it."""
        sent = 0
        text = json.dumps(frame, separators=(",", ":"))
        for ws in list(self._connections.get(user_id, ())):
            try:
                await ws.send_str(text)
                sent += 1
            except (ConnectionError, RuntimeError):
                log.info("frame to a closing connection dropped", extra={"user_id": user_id})
        return sent

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /ws/notifications?token=JWT``."""
        try:
            principal = self._verifier.from_request(request)
        except Problem:
            raise
        ws = web.WebSocketResponse(heartbeat=self._settings.ws_heartbeat_seconds)
        await ws.prepare(request)
        user_id = principal.subject
        if self.connection_count(user_id) >= self._settings.ws_max_connections_per_user:
            await ws.close(code=CLOSE_TOO_MANY_CONNECTIONS, message=b"too many connections for this user")
            return ws
        self._connections.setdefault(user_id, []).append(ws)
        ACTIVE_CONNECTIONS.inc()
        await self._presence.join(user_id)
        log.info("websocket connected", extra={"user_id": user_id})
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                await self._on_client_frame(ws, msg.data)
        finally:
            sockets = self._connections.get(user_id, [])
            if ws in sockets:
                sockets.remove(ws)
            if not sockets:
                self._connections.pop(user_id, None)
                await self._presence.leave(user_id)
            ACTIVE_CONNECTIONS.dec()
            log.info("websocket disconnected", extra={"user_id": user_id})
        return ws

    async def _on_client_frame(self, ws: web.WebSocketResponse, data: str) -> None:
        try:
            frame = json.loads(data)
        except json.JSONDecodeError:
            await ws.send_json({"type": "error", "error": "malformed JSON"})
            return
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind == "ping":
            await ws.send_json({"type": "pong"})
        else:
            await ws.send_json({"type": "error", "error": f"unsupported frame type {kind!r}"})


