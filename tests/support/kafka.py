"""Kafka helpers for tests: build and publish raw requests (reading: ``tests.support.log_reader``)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer


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
