"""On a real broker, the API's publisher puts each key in the partition the producer's own partitioner picks."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaProducer

from api.publisher import Publisher, RawRecord
from engine.settings import Settings
from engine.topics import TopicNames
from streams.admin import ensure_topics


async def test_each_key_lands_where_the_default_partitioner_puts_it(settings: Settings) -> None:
    await ensure_topics(settings)
    names = TopicNames(settings.topic_prefix)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        publisher = Publisher(producer, names)
        keys = [str(uuid.uuid4()).encode() for _ in range(40)] + [b"u1", "ünï".encode(), b"x" * 200]
        # The first record of the topic: no metadata yet, so the producer partitions it itself.
        written = await publisher.forward([RawRecord(names.events, key, b"{}", []) for key in keys])
        for key, at in zip(keys, written, strict=True):
            plain = await producer.send_and_wait(names.events, key=key, value=b"{}")
            assert at.partition == plain.partition, key
            assert publisher.partition(names.events, key) == plain.partition
    finally:
        await producer.stop()
