"""The worker's batched hand-off to the gateways, against real Redis and a real gateway subscription.

A ``RedisPresence`` plays the gateway node (it registers users and receives on its
channel, as ``herald api`` does); ``LiveDispatch`` over ``RedisDispatcher`` is what the
worker runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from redis.asyncio import Redis

from engine.presence import presence_key
from herald.broker import free_port, tansu_binary, wait_for_port
from streams.lingering import lingering_sender
from streams.live_dispatch import Live, LiveDispatch
from streams.websocket_dispatch import RedisDispatcher, render_message
from tests.support.gateway_node import REDIS_DECODING, REDIS_DECODING_IDS, Gateway
from tests.support.waiting import eventually


@pytest.fixture(params=REDIS_DECODING, ids=REDIS_DECODING_IDS)
async def redis(redis_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=request.param)
    yield client
    await client.aclose()


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


def _thread_states(pid: int) -> set[str]:
    """The scheduler state of every thread of ``pid`` (``T``: stopped by a signal)."""
    states = set()
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(OSError):  # a thread that just ended
            states.add(stat.read_text().rsplit(")", 1)[1].split()[0])
    return states


@contextlib.asynccontextmanager
async def paused_broker() -> AsyncIterator[tuple[str, Callable[[bool], Awaitable[None]]]]:
    """A private Tansu and a switch that stops (``True``) or resumes (``False``) the process: while
    it is stopped, no append is acknowledged (a real broker that has not answered yet). The switch
    returns once every thread of the broker is stopped (or none is): a signal is delivered
    asynchronously, and on a loaded machine a thread may still run for a moment after ``kill``."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        str(tansu_binary()), "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
        "--advertised-listener-url", f"tcp://127.0.0.1:{port}", "--storage-engine", "memory://tansu/",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip

    async def stopped(stop: bool) -> None:
        os.kill(proc.pid, signal.SIGSTOP if stop else signal.SIGCONT)

        async def switched() -> bool:
            states = _thread_states(proc.pid)
            return bool(states) and (states == {"T"} if stop else "T" not in states)

        await eventually(switched, what=f"the broker {'stopped' if stop else 'running'}")

    try:
        await wait_for_port("127.0.0.1", port)
        yield f"127.0.0.1:{port}", stopped
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        await proc.wait()


async def test_an_acknowledged_frame_goes_out_while_a_later_one_waits_for_its_acceptance(redis: Redis) -> None:
    """A frame goes out only once its acceptance is acknowledged, and does not wait for a later
    frame's acknowledgement (the batch used to wait for its slowest one)."""
    prefix = f"t{uuid.uuid4().hex[:6]}."

    async def recorded(batch: Sequence[Live]) -> None:
        return None

    async with paused_broker() as (bootstrap, stopped), Gateway(redis, prefix) as gateway:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic("accepted", 1, 1)])
        await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=60_000)
        await producer.start()
        try:
            assert await gateway.presence.join("ana", "c1", 5)
            first = await producer.send("accepted", b"a0")
            await first  # on the log
            await stopped(True)
            second = await producer.send("accepted", b"a1")  # not acknowledged while the broker is stopped
            dispatch = LiveDispatch(RedisDispatcher(redis, prefix), recorded)
            await dispatch.submit(Live("ana", render_message("ana", b'{"id":"a0"}'), "a0", after=(first,)))
            await dispatch.submit(Live("ana", render_message("ana", b'{"id":"a1"}'), "a1", after=(second,)))

            async def front_out() -> bool:
                return gateway.received == ["a0"]

            await eventually(front_out, what="the acknowledged frame at the gateway")
            # A later urgent frame whose append is on the log overtakes the unacknowledged one:
            # by the time it arrives, the task has passed over a1 and held it back.
            await dispatch.submit(Live("ana", render_message("ana", b'{"id":"u0"}'), "u0", after=(first,), urgent=True))

            async def urgent_out() -> bool:
                return "u0" in gateway.received

            await eventually(urgent_out, what="the urgent frame at the gateway")
            assert gateway.received == ["a0", "u0"], "a1 went out before its acceptance was acknowledged"
            assert not second.done()
            await stopped(False)

            async def all_out() -> bool:
                return gateway.received == ["a0", "u0", "a1"]

            await eventually(all_out, what="a1 at the gateway once acknowledged")
            assert second.done() and second.exception() is None
            await dispatch.drained()
            await dispatch.close()
        finally:
            await stopped(False)
            await producer.stop()


async def test_one_round_trip_reaches_every_live_node_of_a_user_and_no_expired_or_silent_one(redis: Redis) -> None:
    prefix = f"t{uuid.uuid4().hex[:6]}."
    async with Gateway(redis, prefix) as one, Gateway(redis, prefix) as two:
        assert await one.presence.join("ana", "c1", 5)
        assert await two.presence.join("ana", "c2", 5)
        key = presence_key(prefix, "ana")
        # A node whose entry expired, one whose expiry is unreadable, and one present but with
        # no subscriber (crashed before its entry expired): none of them took the frame.
        await redis.hset(key, mapping={"gone": str(time.time() - 1), "junk": "soon", "silent": str(time.time() + 60)})
        dispatcher = RedisDispatcher(redis, prefix)
        reached = await dispatcher.dispatch_many(
            [
                ("ana", render_message("ana", b'{"id":"n1"}')),
                ("bob", render_message("bob", b'{"id":"n2"}')),
                ("ana", render_message("ana", b'{"id":"n3"}')),
            ]
        )
        live = sorted([one.presence.node_id, two.presence.node_id])
        assert reached == [live, [], live]

        async def both_received() -> bool:
            return one.received == ["n1", "n3"] and two.received == ["n1", "n3"]

        await eventually(both_received, what="both frames at both gateways of ana")
        assert await dispatcher.dispatch_many([]) == []


async def test_a_waiting_frame_sends_its_lingering_acceptance_now(redis: Redis, kafka_bootstrap: str) -> None:
    """A frame waits on its acceptance's append; the producer would hold the append back for its
    linger (here a minute): ``push`` sends it at once, and records appended after it still go."""
    prefix = f"t{uuid.uuid4().hex[:6]}."
    topic = f"{prefix}accepted"

    async def recorded(batch: Sequence[Live]) -> None:
        return None

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 2, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=60_000, request_timeout_ms=120_000)
    await producer.start()
    async with Gateway(redis, prefix) as gateway:
        try:
            assert await gateway.presence.join("ana", "c1", 5)
            dispatch = LiveDispatch(RedisDispatcher(redis, prefix), recorded, push=lingering_sender(lambda: producer))
            for i in range(3):
                appended = await producer.send(topic, b"a%d" % i, key=b"ana")
                await dispatch.submit(Live("ana", render_message("ana", b'{"id":"a%d"}' % i), i, after=(appended,)))

            async def all_out() -> bool:
                return gateway.received == ["a0", "a1", "a2"]

            # Well within the linger: without the push the first frame would wait a minute.
            await eventually(all_out, timeout=20, what="the frames at the gateway before the producer's linger")
            await dispatch.drained()
            await dispatch.close()
        finally:
            await producer.stop()
