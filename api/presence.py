"""Presence: which gateway nodes hold which users, and the channel frames arrive on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Protocol

from redis.asyncio import Redis

from engine.presence import gateway_channel, presence_key

log = logging.getLogger(__name__)

Deliver = Callable[[str, dict[str, Any]], Awaitable[int]]


class Presence(Protocol):
    """Port used by the gateway."""

    async def start(self, deliver: Deliver, users: Callable[[], Collection[str]]) -> None:
        """Begin receiving frames for this node (``deliver(user, frame)``) and refreshing ``users()``."""
        ...

    async def join(self, user_id: str) -> None:
        """This node now holds a connection of ``user_id``."""
        ...

    async def leave(self, user_id: str) -> None:
        """This node holds no connection of ``user_id`` any more."""
        ...

    async def close(self) -> None:
        """Stop; entries of this node expire on their own if this is never called."""
        ...


class LocalPresence:
    """In-process presence for ``herald dev``: the sink calls the hub directly."""

    async def start(self, deliver: Deliver, users: Callable[[], Collection[str]]) -> None:
        return None

    async def join(self, user_id: str) -> None:
        return None

    async def leave(self, user_id: str) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisPresence:
    """Production presence: a Redis hash per user with per-node expiry, refreshed on a timer."""

    def __init__(self, redis: Redis, prefix: str, node_id: str, ttl: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self.node_id = node_id
        self._ttl = ttl
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, deliver: Deliver, users: Callable[[], Collection[str]]) -> None:
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(gateway_channel(self._prefix, self.node_id))
        self._tasks = [
            asyncio.create_task(self._listen(pubsub, deliver)),
            asyncio.create_task(self._refresh(users)),
        ]

    async def join(self, user_id: str) -> None:
        await self._mark(user_id)

    async def leave(self, user_id: str) -> None:
        await self._redis.hdel(presence_key(self._prefix, user_id), self.node_id)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _mark(self, user_id: str) -> None:
        key = presence_key(self._prefix, user_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, self.node_id, str(time.time() + self._ttl))
            pipe.expire(key, self._ttl)
            await pipe.execute()

    async def _refresh(self, users: Callable[[], Collection[str]]) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            for user_id in list(users()):
                try:
                    await self._mark(user_id)
                except Exception:  # noqa: BLE001 - Redis blips must not kill the refresher
                    log.exception("presence refresh failed", extra={"user_id": user_id})

    async def _listen(self, pubsub: Any, deliver: Deliver) -> None:
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            try:
                payload = json.loads(message["data"])
                await deliver(payload["user_id"], payload["frame"])
            except Exception:  # noqa: BLE001 - one bad frame must not stop fan-out
                log.exception("gateway frame not delivered")
