"""The one way tests read a topic (the event log, the dead letters, a sink's work): from its beginning.

- ``read_topic``: the raw records, until at least ``until`` have arrived;
- ``log_records``: every record present now, decoded (read until the topic goes quiet), as an
  auditor reads the log; ``of_type`` picks events out of them;
- ``TopicTail``: reads in the background while a test runs; tests wait on what has arrived.

All three assign every partition of the topic (waiting for the topic to exist) and seek to its
beginning through ``assign_from_start``, without a consumer group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

Record: TypeAlias = ConsumerRecord[bytes, bytes]


def _consumer(bootstrap: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)


async def assign_from_start(
    consumer: AIOKafkaConsumer, topic: str, *, timeout: float = 30.0, must_exist: bool = True
) -> list[TopicPartition]:
    """Assign every partition of ``topic`` to ``consumer`` at its first offset (``[]``: no such topic,
    when ``must_exist`` is false; else ``AssertionError`` after ``timeout``)."""
    deadline = time.monotonic() + timeout
    await consumer.topics()
    partitions = consumer.partitions_for_topic(topic)
    while not partitions:
        if not must_exist:
            return []
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {topic} does not exist")
        await asyncio.sleep(0.1)
        await consumer.topics()
        partitions = consumer.partitions_for_topic(topic)
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return tps


async def read_topic(bootstrap: str, topic: str, *, until: int, timeout: float = 30.0) -> list[Record]:
    """Read ``topic`` from the beginning until ``until`` records have been seen (or fail)."""
    consumer = _consumer(bootstrap)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        await assign_from_start(consumer, topic, timeout=timeout)
        seen: list[Record] = []
        while len(seen) < until:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(seen)} of {until} records on {topic} after {timeout}s")
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                seen.extend(records)
        return seen
    finally:
        await consumer.stop()


async def log_records(bootstrap: str, topic: str, *, settle_ms: int = 150) -> list[dict[str, Any]]:
    """Every record of ``topic`` present now (read until a fetch returns nothing), decoded."""
    consumer = _consumer(bootstrap)
    await consumer.start()
    try:
        if not await assign_from_start(consumer, topic, must_exist=False):
            return []
        out: list[dict[str, Any]] = []
        quiet_since = time.monotonic()
        while (time.monotonic() - quiet_since) * 1000 < settle_ms:
            batch = await consumer.getmany(timeout_ms=50)
            for records in batch.values():
                out.extend(json.loads(r.value) for r in records)
                quiet_since = time.monotonic()
        return out
    finally:
        await consumer.stop()


def of_type(records: list[dict[str, Any]], event_type: str, *, user: str | None = None) -> list[dict[str, Any]]:
    """Records of ``event_type`` (for ``user`` if given), in log order per partition."""
    return [r for r in records if r.get("type") == event_type and (user is None or r.get("userid") == user)]


class TopicTail:
    """Reads a topic from its beginning in the background; tests wait on what has arrived."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.records: list[Record] = []
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, bootstrap: str, topic: str) -> AsyncIterator[TopicTail]:
        """A tail of ``topic``, started, stopped on leaving."""
        tail = cls(bootstrap, topic)
        await tail.start()
        try:
            yield tail
        finally:
            await tail.stop()

    async def start(self) -> None:
        consumer = _consumer(self.bootstrap)
        await consumer.start()
        self._consumer = consumer
        await assign_from_start(consumer, self.topic)
        self._task = asyncio.create_task(self._run(consumer))

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                self.records.extend(records)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    def events(self, **attrs: Any) -> list[dict[str, Any]]:
        """Decoded CloudEvents whose attributes (``type``, ``userid``, ``subject``...) match ``attrs``."""
        out = []
        for record in self.records:
            env = json.loads(record.value)
            if all(env.get(k) == v for k, v in attrs.items()):
                out.append(env)
        return out

    async def wait(self, probe: Callable[[], Any], *, within: float = 30.0, what: str = "records") -> Any:
        """Until ``probe()`` is truthy (checked as records arrive)."""
        deadline = time.monotonic() + within
        while True:
            result = probe()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {within}s waiting for {what} on {self.topic}")
            await asyncio.sleep(0.05)

    async def wait_events(self, count: int, *, within: float = 30.0, **attrs: Any) -> list[dict[str, Any]]:
        """At least ``count`` events matching ``attrs``."""
        return await self.wait(  # type: ignore[no-any-return]
            lambda: (found := self.events(**attrs)) and len(found) >= count and found,
            within=within,
            what=f"{count} events matching {attrs}",
        )
