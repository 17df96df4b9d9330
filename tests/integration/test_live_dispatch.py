"""The worker's batched hand-off to the gateways, against real Redis and a real gateway subscription.

A ``RedisPresence`` plays the gateway node (it registers users and receives on its
channel, as ``herald api`` does); ``LiveDispatch`` over ``RedisDispatcher`` is what the
worker runs.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from api.ws.presence import RedisPresence
from streams.live_dispatch import Live, LiveDispatch
from streams.websocket_dispatch import RedisDispatcher, render_message
from tests.support.waiting import eventually


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


class Gateway:
    """One gateway node: what it received, in order."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.presence = RedisPresence(redis, prefix, f"node-{uuid.uuid4().hex[:6]}", ttl=30)
        self.received: list[str] = []

    async def deliver(self, user_id: str, frame: dict[str, Any]) -> int:
        self.received.append(frame["id"])
        return 1

    async def __aenter__(self) -> Gateway:
        await self.presence.start(self.deliver, list)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.presence.close()


def live(user: str, nid: str, *, urgent: bool = False) -> Live:
    return Live(user, render_message(user, orjson.dumps({"id": nid})), cause=nid, urgent=urgent)


async def test_frames_reach_the_gateway_holding_the_user_and_the_offline_are_reported(redis: Redis) -> None:
    prefix = f"t{uuid.uuid4().hex[:6]}."
    results: list[tuple[str, list[str]]] = []

    async def recorded(batch: Sequence[Live]) -> None:
        results.extend((str(item.cause), item.reached) for item in batch)

    async with Gateway(redis, prefix) as gateway:
        assert await gateway.presence.join("ana", "c1", 5)
        dispatch = LiveDispatch(RedisDispatcher(redis, prefix), recorded)
        for i in range(300):
            await dispatch.submit(live("ana", f"a{i}"))
        await dispatch.submit(live("bob", "b0"))  # bob is connected nowhere
        await dispatch.drained()
        # drained() returned: every frame submitted before it is published and its result recorded.
        assert len(results) == 301
        assert dict(results)["b0"] == []
        assert all(nodes == [gateway.presence.node_id] for nid, nodes in results if nid != "b0")

        async def all_received() -> bool:
            return len(gateway.received) == 300

        await eventually(all_received, what="300 frames at the gateway")
        assert gateway.received == [f"a{i}" for i in range(300)], "one user's frames arrive in order"
        await dispatch.close()


async def test_high_priority_frames_go_before_a_backlog_of_others(redis: Redis) -> None:
    prefix = f"t{uuid.uuid4().hex[:6]}."

    async def recorded(batch: Sequence[Live]) -> None:
        return None

    async with Gateway(redis, prefix) as gateway:
        assert await gateway.presence.join("ana", "c1", 5)
        dispatch = LiveDispatch(RedisDispatcher(redis, prefix), recorded, max_background_batch=100)
        # Queued before the dispatch task first runs: 1,000 background frames, then one urgent.
        for i in range(1000):
            await dispatch.submit(live("ana", f"low{i}"))
        await dispatch.submit(live("ana", "high", urgent=True))
        await dispatch.drained()

        async def all_received() -> bool:
            return len(gateway.received) == 1001

        await eventually(all_received, what="1,001 frames at the gateway")
        assert gateway.received[0] == "high"
        await dispatch.close()


async def test_a_dead_dispatch_task_fails_the_next_submit_loudly(redis: Redis) -> None:
    prefix = f"t{uuid.uuid4().hex[:6]}."

    async def broken(batch: Sequence[Live]) -> None:
        raise RuntimeError("recording failed")

    dispatch = LiveDispatch(RedisDispatcher(redis, prefix), broken)
    await dispatch.submit(live("ana", "a0"))
    task = dispatch.task
    assert task is not None
    await asyncio.wait({task}, timeout=10)
    with pytest.raises(RuntimeError, match="live dispatch task died"):
        await dispatch.submit(live("ana", "a1"))
