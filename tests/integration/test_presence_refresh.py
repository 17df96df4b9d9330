"""``RedisPresence.refresh``: one script call per chunk of users pushes every entry of the node
forward (the connections' members, the node in the user's hash, both keys' TTL), as the
pipelined commands it replaces did; entries of other nodes are left alone."""

from __future__ import annotations

import time
import uuid

import pytest
from redis.asyncio import Redis

from api.ws import presence as presence_module
from api.ws.presence import RedisPresence, connections_key
from engine.presence import presence_key


@pytest.mark.parametrize("decode", [False, True], ids=["bytes", "decoded"])
async def test_refresh_moves_every_entry_of_the_node(
    redis_url: str, decode: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(presence_module, "REFRESH_CHUNK", 2)  # several chunks: 5 users
    redis = Redis.from_url(redis_url, decode_responses=decode)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    ttl = 30
    here = RedisPresence(redis, prefix, "node-a", ttl)
    other = RedisPresence(redis, prefix, "node-b", ttl)
    try:
        held = [(f"u{i}", f"c{i}") for i in range(5)] + [("u0", "c0b"), ("u3", "c3b")]
        for user, conn in held:
            assert await here.join(user, conn, 10)
        assert await other.join("u1", "x", 10)
        old = time.time()
        # Age this node's entries (scores and hash values) as if they were about to expire.
        for user, conn in held:
            await redis.zadd(connections_key(prefix, user), {f"node-a/{conn}": old + 1})
            await redis.hset(presence_key(prefix, user), "node-a", str(old + 1))
            await redis.expire(presence_key(prefix, user), 2)
            await redis.expire(connections_key(prefix, user), 2)
        other_score = await redis.zscore(connections_key(prefix, "u1"), "node-b/x")

        before = time.time()
        await here.refresh(held)
        after = time.time()

        for user, conn in held:
            score = await redis.zscore(connections_key(prefix, user), f"node-a/{conn}")
            assert score is not None and before + ttl - 0.01 <= score <= after + ttl + 0.01
            stamp = await redis.hget(presence_key(prefix, user), "node-a")
            assert stamp is not None and before + ttl - 0.01 <= float(stamp) <= after + ttl + 0.01
            assert ttl - 1 <= await redis.ttl(presence_key(prefix, user)) <= ttl + 1
            assert ttl - 1 <= await redis.ttl(connections_key(prefix, user)) <= ttl + 1
        assert await redis.zscore(connections_key(prefix, "u1"), "node-b/x") == other_score
        assert await redis.zcard(connections_key(prefix, "u0")) == 2
        # Either client: decoded replies (the roles', herald/stack.py) or bytes (a bare one).
        nodes = {n.node_id: n.connections for n in await here.nodes("u1")}
        assert nodes == {"node-a": 1, "node-b": 1}
        await here.refresh([])  # nothing held: nothing to do
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
