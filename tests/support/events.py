"""Reading the event log as an auditor would: every record so far, decoded to JSON."""

from __future__ import annotations

import json
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


async def log_records(bootstrap: str, topic: str, *, settle_ms: int = 150) -> list[dict[str, Any]]:
    """Every record of ``topic`` present now (read until a fetch returns nothing), decoded."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
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
