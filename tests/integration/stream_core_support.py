"""Helpers for the stream-core integration tests: a test sink on the generic retry path,
a topic tail that collects records as they arrive, and per-module settings."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from engine.retry import DeliveryError
from engine.settings import Settings
from schemas.events import NotificationAccepted
from tests.support.settings import isolated_settings

Record = ConsumerRecord[bytes, bytes]


def core_settings(kafka_bootstrap: str, redis_url: str, **overrides: Any) -> Settings:
    """Isolated settings (own topics and groups) with the Tansu workarounds (``tests/support/settings.py``)."""
    return isolated_settings(kafka_bootstrap, redis_url, **overrides)


@dataclass
class Sent:
    """One successful send seen by the test sink."""

    notification_id: str
    target: str
    at: float


@dataclass
class ScriptedEmailSink:
    """A real in-process sink on the generic retry path, its behaviour scripted by the request.

    ``data.test_fail_first``: the first attempt fails with a retriable error.
    ``data.test_fail``: ``"always"`` fails retriably every time, ``"permanent"`` fails for good.
    """

    channel: str = "email"
    sent: list[Sent] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)

    async def targets(self, accepted: NotificationAccepted) -> Sequence[str]:
        return [f"{accepted.user_id}@example.test"]

    async def send(self, accepted: NotificationAccepted, target: str) -> str | None:
        nid = accepted.notification_id
        self.calls[nid] += 1
        mode = accepted.data.get("test_fail")
        if mode == "permanent":
            raise DeliveryError("550 mailbox unavailable", retriable=False)
        if mode == "always" or (accepted.data.get("test_fail_first") and self.calls[nid] == 1):
            raise DeliveryError("421 service not available, try later", retriable=True)
        self.sent.append(Sent(nid, target, time.time()))
        return f"<{nid}@test>"

    def sends_for(self, notification_id: str) -> list[Sent]:
        return [s for s in self.sent if s.notification_id == notification_id]


class TopicTail:
    """Reads a topic from its beginning in the background; tests wait on what has arrived."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.records: list[Record] = []
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
        await consumer.start()
        self._consumer = consumer
        deadline = time.monotonic() + 30
        partitions = consumer.partitions_for_topic(self.topic)
        while not partitions:
            if time.monotonic() > deadline:
                raise AssertionError(f"topic {self.topic} does not exist")
            await consumer.topics()
            await asyncio.sleep(0.1)
            partitions = consumer.partitions_for_topic(self.topic)
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
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
