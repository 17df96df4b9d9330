"""The API's way into Kafka: requests to the priority topics, facts to the event log."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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

    async def _send(self, topic: str, env: Envelope) -> Written:
        meta = await self._producer.send_and_wait(topic, key=(env.userid or "").encode(), value=encode(env))
        return Written(topic=meta.topic, partition=meta.partition, offset=meta.offset)
