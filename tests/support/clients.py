"""HTTP and WebSocket clients driving a running stack as a user would."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from api.auth import mint_token
from engine.settings import Settings


class UserClient:
    """One user's view of the API: REST with a bearer token, and WebSockets."""

    def __init__(
        self, session: aiohttp.ClientSession, base: str, settings: Settings, user: str, scopes: tuple[str, ...] = ()
    ) -> None:
        self.session = session
        self.base = base
        self.user = user
        self.token = mint_token(settings, user, scopes=scopes)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.base + path, headers=self.headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def websocket(self, query: str = "") -> aiohttp.ClientWebSocketResponse:
        url = self.base.replace("http", "ws", 1) + f"/ws/notifications?token={self.token}{query}"
        return await self.session.ws_connect(url)


async def next_frame(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 20.0) -> dict[str, Any]:
    """The next frame of type ``kind`` (other frame types are skipped)."""

    async def wait() -> dict[str, Any]:
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket closed or errored: {msg.type} {msg.data!r} {msg.extra!r}")
            frame: dict[str, Any] = json.loads(msg.data)
            if frame.get("type") == kind:
                return frame

    return await asyncio.wait_for(wait(), timeout)


async def missed_notifications(ws: aiohttp.ClientWebSocketResponse, timeout: float = 20.0) -> list[dict[str, Any]]:
    """The whole missed-notification replay a new connection starts with (every batch until ``more`` is false)."""
    out: list[dict[str, Any]] = []
    while True:
        frame = await next_frame(ws, "missed_notifications", timeout)
        out.extend(frame["notifications"])
        if not frame.get("more"):
            return out
