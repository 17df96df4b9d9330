"""How the WebSocket sink reaches the gateway nodes holding a user."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Protocol

from redis.asyncio import Redis

from engine.presence import gateway_channel, live_nodes, presence_key


class Dispatcher(Protocol):
    """Port: hand a frame to every gateway connection of a user."""

    async def dispatch(self, user_id: str, frame: Mapping[str, Any]) -> list[str]:
        """Hand ``frame`` to the gateways holding ``user_id``; return the nodes that took it.

        Taking it is not delivering it: a gateway records ``delivery.succeeded`` once the
        frame is on a socket, so a user who left in between is replayed it on reconnect.
        """
        ...


class RedisDispatcher:
    """Production adapter: presence hash in Redis, then PUBLISH to each live gateway's channel."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    async def dispatch(self, user_id: str, frame: Mapping[str, Any]) -> list[str]:
        """Publish to the live gateways present for ``user_id``; a node counts if its subscriber got it
        (a crashed node whose entry has not expired yet has no subscriber: not counted)."""
        raw = await self._redis.hgetall(presence_key(self._prefix, user_id))
        entries = {_text(node): _text(expiry) for node, expiry in raw.items()}
        message = json.dumps({"user_id": user_id, "frame": frame}, separators=(",", ":"))
        reached = []
        for node in live_nodes(entries, now=time.time()):
            receivers = await self._redis.publish(gateway_channel(self._prefix, node), message)
            if receivers:
                reached.append(node)
        return reached


def _text(value: bytes | str) -> str:
    # The client may or may not decode responses; presence entries are ASCII either way.
    return value.decode() if isinstance(value, bytes) else value
