"""``RedisDispatcher`` keeps one connection for its batches: what happens when Redis loses it or the script.

Real Redis; a ``RedisPresence`` plays the gateway node, as in ``test_live_dispatch.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from streams.live_dispatch import Live, LiveDispatch
from streams.websocket_dispatch import RedisDispatcher, render_message
from tests.support.gateway_node import REDIS_DECODING, REDIS_DECODING_IDS, Gateway
from tests.support.waiting import eventually


@pytest.fixture(params=REDIS_DECODING, ids=REDIS_DECODING_IDS)
async def redis(redis_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=request.param)
    yield client
    await client.aclose()


def message(user: str, nid: str) -> tuple[str, bytes]:
    return user, render_message(user, b'{"id":"' + nid.encode() + b'"}')


async def kill_kept_connection(redis: Redis, dispatcher: RedisDispatcher) -> None:
    """Have Redis close the dispatcher's kept connection, and only it (the server is shared)."""
    kept = dispatcher._connection
    assert kept is not None
    await kept.send_command("CLIENT", "ID")
    client_id = await kept.read_response()
    assert await redis.execute_command("CLIENT", "KILL", "ID", client_id) == 1  # type: ignore[no-untyped-call]


@asynccontextmanager
async def ana_online(redis: Redis) -> AsyncIterator[tuple[Gateway, RedisDispatcher]]:
    """A gateway node holding "ana", and a dispatcher that has delivered her first frame ("n1")."""
    prefix = f"t{uuid.uuid4().hex[:6]}."
    async with Gateway(redis, prefix) as gateway:
        assert await gateway.presence.join("ana", "c1", 5)
        dispatcher = RedisDispatcher(redis, prefix)
        assert await dispatcher.dispatch_many([message("ana", "n1")]) == [[gateway.presence.node_id]]
        yield gateway, dispatcher


async def test_batches_share_one_connection_and_a_large_batch_maps_every_frame_to_its_nodes(redis: Redis) -> None:
    prefix = f"t{uuid.uuid4().hex[:6]}."
    async with Gateway(redis, prefix) as one, Gateway(redis, prefix) as two:
        for user in ("ana", "bob"):
            assert await one.presence.join(user, f"c-{user}", 5)
        assert await two.presence.join("ana", "c2", 5)
        dispatcher = RedisDispatcher(redis, prefix)
        users = ["ana", "bob", "cy"] * 40  # cy: offline
        reached = await dispatcher.dispatch_many([message(u, f"n{i}") for i, u in enumerate(users)])
        both = sorted([one.presence.node_id, two.presence.node_id])
        expected = {"ana": both, "bob": [one.presence.node_id], "cy": []}
        assert reached == [expected[u] for u in users]
        pool = redis.connection_pool
        in_use = len(pool._in_use_connections)
        for i in range(5):
            assert await dispatcher.dispatch_many([message("bob", f"m{i}")]) == [[one.presence.node_id]]
        assert len(pool._in_use_connections) == in_use
        await dispatcher.close()
        assert len(pool._in_use_connections) == in_use - 1


async def test_a_script_redis_lost_is_loaded_again(redis: Redis) -> None:
    async with ana_online(redis) as (gateway, dispatcher):
        await redis.script_flush()  # as a restarted Redis: the script's digest is unknown
        assert await dispatcher.dispatch_many([message("ana", "n2")]) == [[gateway.presence.node_id]]

        async def both() -> bool:
            return gateway.received == ["n1", "n2"]

        await eventually(both, what="both frames at the gateway")
        await dispatcher.close()


async def test_a_lost_connection_fails_one_batch_and_the_live_dispatch_sends_it_again(redis: Redis) -> None:
    async with ana_online(redis) as (gateway, dispatcher):
        await kill_kept_connection(redis, dispatcher)
        with pytest.raises((RedisConnectionError, ConnectionError)):
            await dispatcher.dispatch_many([message("ana", "lost")])
        # The next batch goes on a new connection from the pool.
        assert await dispatcher.dispatch_many([message("ana", "n2")]) == [[gateway.presence.node_id]]

        # Through the live dispatch: a batch whose connection died is retried, never dropped.
        await kill_kept_connection(redis, dispatcher)
        results: list[list[str]] = []

        async def recorded(batch: Any) -> None:
            results.extend(item.reached for item in batch)

        live = LiveDispatch(dispatcher, recorded, retry_base=0.01)
        await live.submit(Live("ana", message("ana", "n3")[1], cause="n3"))
        await live.drained()
        assert results == [[gateway.presence.node_id]]

        async def received() -> bool:
            return gateway.received[-1:] == ["n3"] and "n2" in gateway.received

        await eventually(received, what="the retried frame at the gateway")
        await live.close()
        await dispatcher.close()
