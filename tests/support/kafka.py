"""Kafka helpers for tests: build and publish raw requests, wait on commits (reading: ``tests.support.log_reader``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.support.waiting import eventually


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
    records: Sequence[tuple[bytes | None, bytes | None] | tuple[bytes, bytes, list[tuple[str, bytes]]]],
) -> None:
    """Publish raw ``(key, value[, headers])`` records, in order, and wait for acks."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=16384)
    await producer.start()
    try:
        for record in records:
            key, value = record[0], record[1]
            headers = record[2] if len(record) > 2 else None
            await producer.send_and_wait(topic, value=value, key=key, headers=headers)
    finally:
        await producer.stop()


async def publish_json(bootstrap: str, topic: str, user: str, body: dict[str, Any]) -> None:
    """Publish one JSON record keyed by ``user``."""
    await publish(bootstrap, topic, [(user.encode(), json.dumps(body).encode())])


async def committed_to_the_end(bootstrap: str, group_id: str, topic: str, *, within: float = 60) -> None:
    """Until ``group_id`` has committed every partition of ``topic`` up to its end offset."""
    group = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id)
    await group.start()  # not subscribed: it never joins the group, it only reads its committed offsets
    try:
        await group.topics()
        tps = [TopicPartition(topic, p) for p in sorted(group.partitions_for_topic(topic) or ())]
        assert tps, f"{topic} has no partitions"
        ends = await group.end_offsets(tps)

        async def behind() -> dict[int, tuple[int | None, int]]:
            committed = {tp.partition: (await group.committed(tp), ends[tp]) for tp in tps}
            return {p: c for p, c in committed.items() if c[0] is None or c[0] < c[1]}

        async def caught_up() -> bool:
            return not await behind()

        try:
            await eventually(caught_up, timeout=within, interval=0.2, what=f"{group_id}'s commits on {topic}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; (committed, end) by partition: {await behind()}") from None
    finally:
        await group.stop()
