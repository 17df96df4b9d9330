"""Request records go from the worker's consumer to its ingest agents' inboxes (``streams.request_inbox``).

On the session's broker, with real ``herald worker`` processes: a burst is decided in full,
through the inboxes, and the group commits every request partition to its end (commits
follow the acks of finished records); a second worker joining the group in the middle of a
burst (a rebalance: inboxes cleared, records of the old generation neither processed nor
acked) loses no request and decides none twice as a duplicate; nor do partitions the first
worker keeps through a second worker's joins and departures with records in its inboxes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from engine.settings import Settings
from herald.broker import free_port
from streams.admin import ensure_topics
from streams.app import worker_app_id
from tests.support.kafka import committed_to_the_end, request
from tests.support.log_reader import TopicTail
from tests.support.processes import start_role, stop_role
from tests.support.settings import isolated_settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def settings(kafka_bootstrap: str, redis_url: str) -> Settings:
    return isolated_settings(kafka_bootstrap, redis_url, log_level="INFO")


@pytest.fixture
async def log(settings: Settings) -> AsyncIterator[TopicTail]:
    await ensure_topics(settings)  # as a worker creates them at start
    tail = TopicTail(settings.kafka_bootstrap, f"{settings.topic_prefix}events")
    await tail.start()
    yield tail
    await tail.stop()


async def test_a_burst_is_decided_in_full_and_committed_to_the_end(
    settings: Settings, log: TopicTail, output_dir: Path
) -> None:
    async with _Worker(settings, output_dir / "request-inbox-burst.log"):
        ids = await _burst(settings, "burst", 400, priorities=("medium", "low", "high"))
        await _all_accepted(log, ids, within=120)
        for priority in ("high", "medium", "low"):
            await _committed_to_the_end(settings, f"{settings.topic_prefix}requests.{priority}")
    assert not log.events(type="notification.duplicate")


async def test_a_worker_joining_mid_burst_loses_nothing_and_duplicates_nothing(
    settings: Settings, log: TopicTail, output_dir: Path
) -> None:
    ids: list[str] = []
    async with _Worker(settings, output_dir / "request-inbox-first.log"):
        stop = asyncio.Event()
        feeder = asyncio.create_task(_feed(settings, ids, stop))
        try:
            await log.wait(lambda: len(_accepted(log)) >= 100, within=60, what="the first acceptances")
            async with _Worker(settings, output_dir / "request-inbox-second.log"):
                # Ready: the group has rebalanced with records in flight; more come after it.
                stop.set()
                await feeder
                ids += await _burst(settings, "after", 200, priorities=("medium",))
                assert len(_accepted(log)) < len(ids), "nothing was left to decide after the join"
                await _all_accepted(log, ids, within=180)
                await _committed_to_the_end(settings, f"{settings.topic_prefix}requests.medium")
        finally:
            stop.set()
            await asyncio.gather(feeder, return_exceptions=True)
    # A request processed again after the rebalance is recognised as its own redelivery
    # (same source record): the same acceptance again, never a duplicate of itself.
    assert not log.events(type="notification.duplicate")


async def test_partitions_kept_through_rebalances_with_records_in_their_inboxes_lose_nothing(
    settings: Settings, log: TopicTail, output_dir: Path
) -> None:
    # A second worker joins, leaves, joins and leaves again while a feed on all three
    # priorities keeps the first worker's inboxes filled: four rebalances in which the first
    # worker keeps partitions (Faust's assignor keeps what it can), each with its consumer
    # moved back to the committed offsets at the end, Faust's buffers cleared as it resumes
    # the flow (mid-rebalance and at the end), and polls in flight across the move. With the
    # inboxes cleared at those resumes and a stale poll's record read as a hole, requests of
    # kept partitions were never decided and the group committed past them.
    ids: list[str] = []
    async with _Worker(settings, output_dir / "request-inbox-kept-first.log"):
        stop = asyncio.Event()
        feeder = asyncio.create_task(_feed(settings, ids, stop, priorities=("high", "medium", "low")))
        try:
            await log.wait(lambda: len(_accepted(log)) >= 100, within=60, what="the first acceptances")
            for round_ in range(2):
                async with _Worker(settings, output_dir / f"request-inbox-kept-second-{round_}.log"):
                    await _more_accepted(log, 100, what="acceptances with two workers")
                await _more_accepted(log, 100, what="acceptances with one worker again")
            stop.set()
            await feeder
            assert len(_accepted(log)) < len(ids), "nothing was left to decide after the rebalances"
            await _all_accepted(log, ids, within=240)
            for priority in ("high", "medium", "low"):
                await _committed_to_the_end(settings, f"{settings.topic_prefix}requests.{priority}")
        finally:
            stop.set()
            await asyncio.gather(feeder, return_exceptions=True)
    assert not log.events(type="notification.duplicate")


class _Worker:
    """``herald worker`` as a process, ready (holding partitions) when the block starts."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.port = free_port()
        self.settings = settings.replace(metrics_port=self.port)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> _Worker:
        self.log.write_bytes(b"")
        proc = start_role("worker", self.settings, self.log)
        self.proc = proc
        deadline = time.monotonic() + 90
        async with aiohttp.ClientSession() as http:
            while True:
                assert proc.poll() is None, f"worker exited with {proc.returncode}:\n{self.log.read_text()[-3000:]}"
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/readyz") as resp:
                        if resp.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, f"worker not ready:\n{self.log.read_text()[-3000:]}"
                await asyncio.sleep(0.2)

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_role(self.proc)


async def _burst(settings: Settings, tag: str, count: int, *, priorities: tuple[str, ...]) -> list[str]:
    """``count`` requests of 50 users, spread over ``priorities``."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        return await _send(producer, settings, tag, count, priorities)
    finally:
        await producer.stop()


async def _send(
    producer: AIOKafkaProducer, settings: Settings, tag: str, count: int, priorities: tuple[str, ...]
) -> list[str]:
    run = uuid.uuid4().hex[:6]
    ids = []
    for i in range(count):
        user = f"inbox-{tag}-{run}-{i % 50}"
        priority = priorities[i % len(priorities)]
        body = request(user, f"{tag} {i}", priority=priority, channels=["websocket"])
        ids.append(str(body["id"]))
        topic = f"{settings.topic_prefix}requests.{priority}"
        # One record per batch: Tansu's end offsets are wrong after multi-record batches.
        await producer.send_and_wait(topic, key=user.encode(), value=json.dumps(body).encode())
    return ids


async def _feed(
    settings: Settings,
    ids: list[str],
    stop: asyncio.Event,
    *,
    limit: int = 20_000,
    priorities: tuple[str, ...] = ("medium",),
) -> None:
    """Requests of ``priorities``, 20 every 20 ms, until ``stop`` (or ``limit``); their ids into ``ids``."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        while not stop.is_set() and len(ids) < limit:
            ids += await _send(producer, settings, "feed", 20, priorities)
            await asyncio.sleep(0.02)
    finally:
        await producer.stop()


def _accepted(log: TopicTail) -> set[str]:
    return {str(e["subject"]) for e in log.events(type="notification.accepted")}


async def _more_accepted(log: TopicTail, count: int, *, what: str) -> None:
    target = len(_accepted(log)) + count
    await log.wait(lambda: len(_accepted(log)) >= target, within=120, what=what)


async def _all_accepted(log: TopicTail, ids: list[str], *, within: float) -> None:
    wanted = set(ids)
    await log.wait(lambda: wanted <= _accepted(log), within=within, what=f"{len(wanted)} acceptances")


async def _committed_to_the_end(settings: Settings, topic: str) -> None:
    """Until the worker's group has committed every partition of ``topic`` up to its end offset."""
    await committed_to_the_end(settings.kafka_bootstrap, worker_app_id(settings), topic)
