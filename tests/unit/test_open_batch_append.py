"""``streams.internals.append_to_open_batch``: a record added to its partition's lingering batch
is exactly what aiokafka's ``send`` would have added, and anything else is left to ``send``.

Real aiokafka producers (not started: the accumulator batches records without a broker);
the batches built either way are read back with aiokafka's own record reader.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.internals import append_to_open_batch

TOPIC = "t"
_MADE: list[AIOKafkaProducer] = []


def _producer(**config: Any) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", **config)
    _MADE.append(producer)
    return producer


@pytest.fixture(autouse=True)
def _never_started() -> Iterator[None]:
    yield
    for producer in _MADE:  # never started, nothing to stop (stop() would wait for the batches to drain)
        producer._closed = True
    _MADE.clear()


async def _general(producer: AIOKafkaProducer, partition: int, key: bytes | None, value: bytes | None) -> Any:
    """What ``send`` does once it knows the partition (the metadata wait aside)."""
    tp = TopicPartition(TOPIC, partition)
    return await producer._message_accumulator.add_message(tp, key, value, 1.0)


def _records(producer: AIOKafkaProducer) -> dict[int, list[list[tuple[int, bytes | None, bytes | None, Any]]]]:
    """Per partition, each lingering batch's records: (offset in batch, key, value, headers)."""
    out: dict[int, list[list[tuple[int, bytes | None, bytes | None, Any]]]] = {}
    for tp, batches in producer._message_accumulator._batches.items():
        for batch in batches:
            records = MemoryRecords(bytes(batch.get_data_buffer()))
            read = []
            while records.has_next():
                for record in records.next_batch():
                    read.append((record.offset, record.key, record.value, list(record.headers)))
            out.setdefault(tp.partition, []).append(read)
    return out


_record = st.tuples(
    st.integers(0, 3),
    st.one_of(st.none(), st.binary(max_size=40)),
    st.one_of(st.none(), st.binary(max_size=3000)),
).filter(lambda r: r[1] is not None or r[2] is not None)


@settings(max_examples=60, deadline=None)
@given(st.lists(_record, min_size=1, max_size=60))
def test_records_land_as_sends_would_put_them(records: list[tuple[int, bytes | None, bytes | None]]) -> None:
    async def run() -> tuple[Any, Any, int]:
        # A small batch size: batches fill up, so the general path (a new batch) is taken too.
        general, direct = _producer(max_batch_size=4096), _producer(max_batch_size=4096)
        appended = 0
        futures = []
        for partition, key, value in records:
            await _general(general, partition, key, value)
            sent = append_to_open_batch(direct, TOPIC, partition, key, value)
            if sent is None:
                sent = await _general(direct, partition, key, value)
            else:
                appended += 1
            futures.append(sent)
        assert all(isinstance(f, asyncio.Future) and not f.done() for f in futures)
        return _records(general), _records(direct), appended

    # add_message waits for a full batch to drain: with nothing draining, a batch must always have room
    # for the first record of a partition, which these sizes guarantee.
    general, direct, appended = asyncio.run(run())
    assert direct == general
    # Only the first record of each batch needed the general path (a new batch).
    assert appended == len(records) - sum(len(batches) for batches in general.values())


async def test_a_partition_without_a_batch_is_left_to_send() -> None:
    producer = _producer()
    assert append_to_open_batch(producer, TOPIC, 0, b"k", b"v") is None
    assert not producer._message_accumulator._batches  # nothing created
    await _general(producer, 0, b"k", b"v")
    assert append_to_open_batch(producer, TOPIC, 1, b"k", b"v") is None  # another partition: still none
    sent = append_to_open_batch(producer, TOPIC, 0, b"k2", b"v2")
    assert sent is not None
    assert [(k, v) for _, k, v, _ in _records(producer)[0][0]] == [(b"k", b"v"), (b"k2", b"v2")]


async def test_a_full_batch_is_left_to_send_and_gets_nothing() -> None:
    producer = _producer(max_batch_size=1024)
    await _general(producer, 0, b"k", b"x" * 600)
    assert append_to_open_batch(producer, TOPIC, 0, b"k", b"y" * 600) is None  # no room: send waits for a drain
    assert [v for _, _, v, _ in _records(producer)[0][0]] == [b"x" * 600]


async def test_a_closed_or_failed_accumulator_is_left_to_send() -> None:
    producer = _producer()
    await _general(producer, 0, b"k", b"v")
    accumulator = producer._message_accumulator
    accumulator._exception = RuntimeError("broker said no")
    assert append_to_open_batch(producer, TOPIC, 0, b"k", b"v") is None  # send raises it
    accumulator._exception = None
    accumulator._closed = True
    assert append_to_open_batch(producer, TOPIC, 0, b"k", b"v") is None  # send raises ProducerClosed
    assert len(_records(producer)[0][0]) == 1


@pytest.mark.parametrize(
    "config",
    [
        {"enable_idempotence": True},
        {"transactional_id": "tx"},
        {"key_serializer": lambda k: k},
        {"value_serializer": lambda v: v},
    ],
)
async def test_producers_with_sequence_numbers_or_serialisers_are_left_to_send(config: dict[str, Any]) -> None:
    producer = _producer(**config)
    producer._message_accumulator._txn_manager = None  # a batch without a transaction begun, for the test
    await _general(producer, 0, b"k", b"v")
    assert append_to_open_batch(producer, TOPIC, 0, b"k", b"v") is None


async def test_a_large_record_is_left_to_send_for_its_size_check() -> None:
    producer = _producer(max_request_size=10_000, max_batch_size=100_000)
    await _general(producer, 0, b"k", b"v")
    assert append_to_open_batch(producer, TOPIC, 0, b"k", b"x" * 4_990) is not None
    assert append_to_open_batch(producer, TOPIC, 0, b"k", b"x" * 4_999) is None  # half the limit: send checks it
    assert append_to_open_batch(producer, TOPIC, 0, b"k", b"x" * 20_000) is None  # send refuses it


async def test_the_future_is_resolved_with_the_batch() -> None:
    producer = _producer()
    first = await _general(producer, 2, b"k", b"v")
    rng = random.Random(1)
    more = [append_to_open_batch(producer, TOPIC, 2, b"k", rng.randbytes(10)) for _ in range(5)]
    [batch] = producer._message_accumulator._batches[TopicPartition(TOPIC, 2)]
    batch.done(base_offset=100)
    offsets = [f.result().offset for f in [first, *more] if f is not None]
    assert offsets == [100, 101, 102, 103, 104, 105]
