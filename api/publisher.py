"""The API's way into Kafka: requests to the priority topics, facts to the event log."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from engine.priority import Priority
from engine.topics import TopicNames
from schemas.codec import encode
from schemas.envelope import Envelope


@dataclass(frozen=True, slots=True)
class Written:
    """Where a record landed: what read-your-writes waits for."""

    topic: str
    partition: int
    offset: int


class Publisher:
    """Appends envelopes keyed by user and waits for the broker's acknowledgement."""

    def __init__(self, producer: AIOKafkaProducer, names: TopicNames) -> None:
        self._producer = producer
        self.names = names

    async def request(self, env: Envelope, priority: Priority) -> Written:
        """Publish a ``notification.requested`` to its priority topic."""
        return await self._send(self.names.request(priority), env)

    async def append(self, envelopes: Iterable[Envelope]) -> list[Written]:
        """Append facts (``notification.read``, ``device.registered``, ...) to the event log."""
        return [await self._send(self.names.events, env) for env in envelopes]

    async def enqueue(self, env: Envelope) -> asyncio.Future[Any]:
        """Start appending one fact to the event log; the future resolves on the broker's ack.

        For hot paths (the gateway's delivery receipts): records queue up and leave in
        batches instead of one round trip each.
        """
        fut: asyncio.Future[Any] = await self._producer.send(
            self.names.events, key=(env.userid or "").encode(), value=encode(env)
        )
        return fut

    async def request_many(self, requests: Iterable[tuple[Envelope, Priority]]) -> list[Written]:
        """Publish many requests with the sends in flight together (bulk), then wait for all acks."""
        futures = [
            await self._producer.send(self.names.request(priority), key=(env.userid or "").encode(), value=encode(env))
            for env, priority in requests
        ]
        metas = await asyncio.gather(*futures)
        return [Written(topic=m.topic, partition=m.partition, offset=m.offset) for m in metas]

    async def append_many(self, envelopes: Iterable[Envelope]) -> list[Written]:
        """Append many facts with the sends in flight together, then wait for all acks."""
        futures = [
            await self._producer.send(self.names.events, key=(env.userid or "").encode(), value=encode(env))
            for env in envelopes
        ]
        metas = await asyncio.gather(*futures)
        return [Written(topic=m.topic, partition=m.partition, offset=m.offset) for m in metas]

    async def _send(self, topic: str, env: Envelope) -> Written:
        meta = await self._producer.send_and_wait(topic, key=(env.userid or "").encode(), value=encode(env))
        return Written(topic=meta.topic, partition=meta.partition, offset=meta.offset)
