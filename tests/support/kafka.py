"""Kafka helpers for tests: publish raw records, read a topic from the start."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord


def request(user: str, title: str = "Hello", **data: Any) -> dict[str, Any]:
    """A structured CloudEvents ``notification.requested``."""
    return {
        "specversion": "1.0",
        "type": "notification.requested",
        "id": str(uuid.uuid4()),
        "source": "tests",
        "data": {"user_id": user, "title": title, "body": data.pop("body", "body text"), **data},
    }


async def publish(
    bootstrap: str,
    topic: str,
    records: list[tuple[bytes | None, bytes | None]] | list[tuple[bytes, bytes, list[tuple[str, bytes]]]],
) -> None:
    """Publish raw ``(key, value[, headers])`` records, in order, and wait for acks."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=16384)
    await producer.start()
    try:
        for record in records:
            key, value = record[0], record[1]
            headers = record[2] if len(record) > 2 else None  # type: ignore[misc]
            await producer.send_and_wait(topic, value=value, key=key, headers=headers)
    finally:
        await producer.stop()


async def publish_json(bootstrap: str, topic: str, user: str, body: dict[str, Any]) -> None:
    """Publish one JSON record keyed by ``user``."""
    await publish(bootstrap, topic, [(user.encode(), json.dumps(body).encode())])


async def read_topic(
    bootstrap: str, topic: str, *, until: int, timeout: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``topic`` from the beginning until ``until`` records have been seen (or fail)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = None
        deadline = time.monotonic() + timeout
        while not partitions:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await consumer.topics()
                if time.monotonic() > deadline:
                    raise AssertionError(f"topic {topic} does not exist")
                await asyncio.sleep(0.1)
        from aiokafka import TopicPartition

        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen: list[ConsumerRecord[bytes, bytes]] = []
        while len(seen) < until:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(seen)} of {until} records on {topic} after {timeout}s")
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                seen.extend(records)
        return seen
    finally:
        await consumer.stop()
