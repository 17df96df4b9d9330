"""How the WebSocket sink reaches the gateway nodes holding a user."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
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

    async def dispatch_many(self, items: Sequence[tuple[str, bytes]]) -> list[list[str]]:
        """Publish pre-rendered pub/sub messages (``render_message``) for many users at once;
        per item, the nodes that took it."""
        ...


def render_message(user_id: str, frame_json: bytes) -> bytes:
    """The pub/sub message a gateway receives: the user and the frame, rendered once."""
    return b'{"user_id":' + json.dumps(user_id).encode() + b',"frame":' + frame_json + b"}"


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

    async def dispatch_many(self, items: Sequence[tuple[str, bytes]]) -> list[list[str]]:
        """Two pipelined round trips for the whole batch: every user's presence, then every publish."""
        if not items:
            return []
        users = list(dict.fromkeys(user for user, _ in items))
        async with self._redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.hgetall(presence_key(self._prefix, user))
            raws = await pipe.execute()
        now = time.time()
        nodes_of = {
            user: live_nodes({_text(n): _text(e) for n, e in raw.items()}, now=now)
            for user, raw in zip(users, raws, strict=True)
        }
        targets: list[tuple[int, str]] = []
        async with self._redis.pipeline(transaction=False) as pipe:
            for index, (user, message) in enumerate(items):
                for node in nodes_of[user]:
                    pipe.publish(gateway_channel(self._prefix, node), message)
                    targets.append((index, node))
            receivers = await pipe.execute() if targets else []
        reached: list[list[str]] = [[] for _ in items]
        for (index, node), count in zip(targets, receivers, strict=True):
            if count:
                reached[index].append(node)
        return reached


def _text(value: bytes | str) -> str:
    # The client may or may not decode responses; presence entries are ASCII either way.
    return value.decode() if isinstance(value, bytes) else value
