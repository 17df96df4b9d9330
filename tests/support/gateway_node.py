"""A gateway node for the worker's live-dispatch tests: a ``RedisPresence`` that registers users and
records the frames it receives on its channel, as ``herald api`` does."""

from __future__ import annotations

import uuid
from typing import Any

from redis.asyncio import Redis

from api.ws.presence import RedisPresence

REDIS_DECODING = [False, True]
"""A client's ``decode_responses``: decoded, as the roles' client is (herald/stack.py); bytes, as a bare client is."""
REDIS_DECODING_IDS = ["bytes", "decoded"]


class Gateway:
    """One gateway node: what it received, in order."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.presence = RedisPresence(redis, prefix, f"node-{uuid.uuid4().hex[:6]}", ttl=30)
        self.received: list[str] = []

    async def deliver(self, user_id: str, frame: dict[str, Any], text: str | None = None) -> int:
        self.received.append(frame["id"])
        return 1

    async def __aenter__(self) -> Gateway:
        await self.presence.start(self.deliver, list)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.presence.close()
