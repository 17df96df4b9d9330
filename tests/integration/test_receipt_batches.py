"""The gateway's receipts leave in one record batch per partition (``Publisher.enqueue_many``), on a real
broker: every receipt once, each partition's records in the order they were taken, a read among them
(with its scheduler cancel) in its place, and a refused batch counted receipt by receipt."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from api.publisher import Encoded, Publisher, Sending
from api.ws.receipts import RECEIPTS_FAILED, Receipts
from engine.delivery import read_over_websocket, websocket_delivered
from engine.settings import Settings
from engine.topics import TopicNames
from schemas.codec import decode, encode, format_time
from schemas.envelope import Envelope
from streams.admin import ensure_topics
from tests.support.log_reader import read_topic


def _view(user: str, priority: str = "high") -> dict[str, str]:
    nid = str(uuid.uuid4())
    return {"id": nid, "user_id": user, "priority": priority, "created_at": format_time(datetime.now(UTC))}


async def test_enqueue_many_sends_a_batch_per_partition_in_order(settings: Settings) -> None:
    await ensure_topics(settings)
    names = TopicNames(settings.topic_prefix)
    # Small batches: a partition's receipts of one call fill several.
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, max_batch_size=8192, linger_ms=5)
    await producer.start()
    try:
        publisher = Publisher(producer, names)
        await publisher.append([read_over_websocket("warm", "warm", now=datetime.now(UTC))])  # topic metadata
        now = datetime.now(UTC)
        users = [f"u{i}" for i in range(12)]
        envelopes = [
            websocket_delivered(
                _view(users[i % len(users)]), node="n1", connection="c1", via="live", created_at=now, now=now
            )
            for i in range(300)
        ]
        read = read_over_websocket(envelopes[150].subject or "", "u6", now=now)
        envelopes.insert(151, read)
        sending = await publisher.enqueue_many(envelopes)
        # 301 records in a few batches: the partitions' batches before the read, the read, then the rest.
        assert len(sending) < len(envelopes) // 5
        assert [env for part in sending for env in part.envelopes].count(read) == 1
        assert sorted(id(env) for part in sending for env in part.envelopes) == sorted(id(env) for env in envelopes)
        for part in sending:
            await part.sent
        records = await read_topic(settings.kafka_bootstrap, names.events, until=len(envelopes) + 1)
        by_partition: dict[int, list[bytes]] = {}
        for record in records:
            by_partition.setdefault(record.partition, []).append(record.value)
        for env in envelopes:  # each where the producer's partitioner puts its key, in the order given
            key = (env.userid or "").encode()
            assert publisher.partition(names.events, key) is not None
        for partition, values in by_partition.items():
            expected = [
                encode(env)
                for env in envelopes
                if publisher.partition(names.events, (env.userid or "").encode()) == partition
            ]
            assert [v for v in values if v in set(expected)] == expected
        assert sum(decode(r.value).type == "notification.read" for r in records) == 2  # the warm-up's and ours
        cancels = await read_topic(settings.kafka_bootstrap, names.scheduled, until=2)
        assert {c.key for c in cancels} == {b"warm", b"u6"}
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def _publisher(settings: Settings, kind: type[Publisher] = Publisher) -> AsyncIterator[Publisher]:
    """A real publisher on the test broker, its topics' metadata warmed by one append (the producer stopped after)."""
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=2)
    await producer.start()
    try:
        publisher = kind(producer, TopicNames(settings.topic_prefix))
        await publisher.append([read_over_websocket("warm", "warm", now=datetime.now(UTC))])
        yield publisher
    finally:
        await producer.stop()


async def test_receipts_reach_the_log_once_each_and_a_refused_batch_counts_each_receipt(settings: Settings) -> None:
    names = TopicNames(settings.topic_prefix)
    async with _publisher(settings) as publisher:
        receipts = Receipts(publisher, "node-1")
        views = [_view(f"v{i % 7}", "low" if i % 3 else "high") for i in range(500)]
        for i in range(0, len(views), 5):  # five notifications per write, as a turn's frames
            receipts.delivered_now(views[i : i + 5], connection=f"c{i % 7}", via="live")
        for user in {v["user_id"] for v in views}:
            await receipts.flush(user, within=30)
        records = await read_topic(settings.kafka_bootstrap, names.events, until=len(views) + 1)
        delivered = [decode(r.value) for r in records if decode(r.value).type == "delivery.succeeded"]
        assert sorted(env.subject or "" for env in delivered) == sorted(v["id"] for v in views)
        assert len({env.id for env in delivered}) == len(views)
        await receipts.close()
    # A producer the broker takes nothing more from: every receipt of the batch is counted as failed.
    before = RECEIPTS_FAILED._value.get()
    receipts = Receipts(publisher, "node-1")
    receipts.delivered_now([_view("w1"), _view("w1"), _view("w2")], connection="c1", via="live")
    await receipts.flush("w1", within=10)
    await receipts.flush("w2", within=10)
    assert RECEIPTS_FAILED._value.get() == before + 3
    await receipts.close()


class _Counting(Publisher):
    """A real publisher that remembers each ``enqueue_many`` call's size (one drain's appends)."""

    calls: list[int]

    async def enqueue_many(self, envelopes: Sequence[Envelope | Encoded]) -> list[Sending]:
        self.calls.append(len(envelopes))
        return await super().enqueue_many(envelopes)


async def test_receipts_linger_into_one_append_and_a_close_sends_them_at_once(settings: Settings) -> None:
    names = TopicNames(settings.topic_prefix)
    async with _publisher(settings, _Counting) as publisher:
        assert isinstance(publisher, _Counting)
        publisher.calls = []
        # Receipts taken over ~100 ms within a 1 s linger leave in one drain, after the linger.
        receipts = Receipts(publisher, "node-1", linger=1.0)
        views = [_view("lg1") for _ in range(5)]
        began = time.monotonic()
        for view in views:
            receipts.delivered_now([view], connection="c1", via="live")
            await asyncio.sleep(0.02)
        records = await read_topic(settings.kafka_bootstrap, names.events, until=len(views) + 1)
        assert time.monotonic() - began >= 0.9  # held for the linger, not sent per loop turn
        assert publisher.calls == [len(views)]
        delivered = [decode(r.value) for r in records if decode(r.value).type == "delivery.succeeded"]
        assert sorted(env.subject or "" for env in delivered) == sorted(v["id"] for v in views)
        # A client's clean close (flush) does not wait out a long linger.
        slow = Receipts(publisher, "node-1", linger=60.0)
        view = _view("lg2")
        slow.delivered_now([view], connection="c2", via="live")
        began = time.monotonic()
        await slow.flush("lg2", within=30)
        assert time.monotonic() - began < 10
        records = await read_topic(settings.kafka_bootstrap, names.events, until=len(views) + 2)
        assert view["id"] in {decode(r.value).subject for r in records}
        await receipts.close()
        await slow.close()
