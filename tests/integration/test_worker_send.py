"""The worker's sends and lag probe, cheaper, on a real broker.

- ``streams.publish.send`` (ingest's acceptance, every ``append``) hands a record to the
  app's producer without Faust's per-message bookkeeping: the record must be exactly what
  ``Topic.send`` writes (same partition for the key, same value, no headers, in order with
  it), and the producer flush that Faust awaits before every offset commit must wait for it.
- Ingest's lag probe works out a request topic's partitions once per assignment: after a
  new assignment it must ask about the new partitions, not the old ones.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.settings import Settings
from streams.admin import ensure_topics
from streams.ingest import _lag_probe
from streams.publish import send
from streams.topics import declare
from tests.integration.stream_core_support import core_settings
from tests.support.log_reader import read_topic

pytestmark = pytest.mark.slow

USERS = 24
"""Enough users that every partition of the log gets records."""


@pytest.fixture
def settings(kafka_bootstrap: str, redis_url: str) -> Settings:
    return core_settings(kafka_bootstrap, redis_url)


async def test_send_writes_what_topic_send_writes_and_the_commit_flush_waits_for_it(settings: Settings) -> None:
    await ensure_topics(settings)
    # A long linger: nothing leaves the producer before the flush unless the flush sends it.
    app = faust.App(
        f"{settings.app_id}-send", broker=f"kafka://{settings.kafka_bootstrap}", producer_linger=0.5, web_enabled=False
    )
    topics = declare(app, settings)
    producer = await app.maybe_start_producer()
    users = [f"send-{uuid.uuid4().hex[:6]}-{i}" for i in range(USERS)]
    try:
        direct = []
        for user in users:
            await topics.events.send(key=user.encode(), value=b"faust " + user.encode())
            direct.append(await send(topics.events, user.encode(), b"direct " + user.encode()))
        assert not any(f.done() for f in direct)  # still lingering
        await producer.flush()  # what Faust awaits before committing offsets
        assert all(f.done() and f.exception() is None for f in direct)
    finally:
        await producer.stop()

    records = await read_topic(settings.kafka_bootstrap, topics.names.events, until=2 * USERS)
    by_user: dict[bytes, list[Any]] = {}
    for r in records:
        if r.key is not None and r.key.decode() in users:
            by_user.setdefault(r.key, []).append(r)
    assert len(by_user) == USERS
    partitions = set()
    for key, (faust_sent, direct_sent) in ((k, sorted(v, key=lambda r: r.offset)) for k, v in by_user.items()):
        assert (faust_sent.value, direct_sent.value) == (b"faust " + key, b"direct " + key)
        assert direct_sent.partition == faust_sent.partition  # same partitioner over the key
        assert direct_sent.offset > faust_sent.offset  # in the order sent
        assert list(direct_sent.headers) == list(faust_sent.headers) == []
        partitions.add(direct_sent.partition)
    assert len(partitions) > 1


async def test_lag_probe_follows_a_new_assignment(settings: Settings) -> None:
    await ensure_topics(settings)
    app = faust.App(f"{settings.app_id}-lag", broker=f"kafka://{settings.kafka_bootstrap}", web_enabled=False)
    topics = declare(app, settings)
    high, medium = topics.names.request("high"), topics.names.request("medium")
    client = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await client.start()
    asked: list[Any] = []

    def probe(_client: Any, tp: Any) -> bool:
        asked.append(tp)
        return False

    # ``kafka_client`` reads the aiokafka client behind the consumer as Faust holds it.
    fake_app: Any = SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(_consumer=client)))
    lagging = _lag_probe(fake_app, high, probe)  # type: ignore[arg-type]
    try:
        assert lagging() is False and asked == []  # nothing assigned yet
        client.assign([TopicPartition(high, 0), TopicPartition(high, 1), TopicPartition(medium, 0)])
        await client.getmany(timeout_ms=50)
        for _ in range(3):
            lagging()
        assert sorted(asked) == sorted(3 * [TopicPartition(high, 0), TopicPartition(high, 1)])
        asked.clear()
        client.assign([TopicPartition(high, 2), TopicPartition(medium, 1)])  # a rebalance: a new assignment
        await client.getmany(timeout_ms=50)
        lagging()
        assert asked == [TopicPartition(high, 2)]
    finally:
        await client.stop()
