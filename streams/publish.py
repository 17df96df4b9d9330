"""Appending envelopes to topics from inside a Faust agent."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Iterable
from typing import Any

import faust
from aiokafka.partitioner import DefaultPartitioner
from faust.types import AppT

from schemas.codec import encode
from schemas.envelope import Envelope

log = logging.getLogger(__name__)


async def send(topic: faust.TopicT, key: bytes, value: bytes) -> asyncio.Future[Any]:
    """Hand one record to the app's producer; the future of its broker acknowledgement.

    The same producer and the same record as ``topic.send`` (raw key and value, the
    default partitioner over the key), without Faust's per-message bookkeeping on top
    (its pending message, future message and send callback: about a third of a send's
    cost in the worker), and without Faust's ``Producer.send`` wrapper around aiokafka's
    (its transaction lookup, header conversion and ``on_produce_message`` signal, which no
    one here receives): the record goes to aiokafka's producer itself, the one Faust's
    wraps. Offset commits still wait for it: Faust flushes this producer before every commit.
    A send the broker finally refuses is logged, as Faust logs its own (``_on_published``).

    The record's partition is the one aiokafka's default partitioner would give the key
    (``partition_of``), worked out here with a key's hash remembered.
    """
    producer, client = await producer_of(topic.app)
    sent: asyncio.Future[Any]
    name = topic.get_topic_name()
    if client is not None:
        sent = await client.send(name, value, key=key, partition=partition_of(client, name, key))
    else:  # another transport: Faust's producer
        sent = await producer.send(name, key, value, None, None, None)
    sent.add_done_callback(report_failure)
    return sent


async def producer_of(app: AppT) -> tuple[Any, Any]:
    """The app's started producer and the aiokafka producer behind it (``None``: another transport).

    Once the producer has started, without ``maybe_start_producer``'s stampede guard (a
    future and a lock per call): the worker's hot path sends a few records per notification.
    """
    producer: Any = app.producer
    if not producer.started or app.in_transaction:
        producer = await app.maybe_start_producer()
    return producer, getattr(producer, "_producer", None)


HASHES_KEPT = 65536
"""Keys whose hash the worker's sends remember (the same users again and again: acceptance, deliveries)."""
_hashes: dict[bytes, int] = {}


def partition_of(client: Any, topic: str, key: bytes) -> int | None:
    """The partition aiokafka's default partitioner gives ``key`` in ``topic``; ``None`` to let ``client`` choose.

    aiokafka's ``DefaultPartitioner`` hashes every key with a pure-Python murmur2 (about a
    twentieth of the worker's CPU in a 20,000-user bulk); ``murmur2`` below is the same
    function in half the time, and a key's hash is remembered. ``None`` (the producer
    partitions itself, after waiting for them) while the topic's partitions are not known
    yet, and for a producer with another partitioner.
    """
    if type(client._partitioner) is not DefaultPartitioner:
        return None
    partitions = client.client.cluster.partitions_for_topic(topic)
    if not partitions:
        return None
    hashed = _hashes.get(key)
    if hashed is None:
        if len(_hashes) >= HASHES_KEPT:
            _hashes.clear()
        hashed = _hashes[key] = murmur2(key) & 0x7FFFFFFF
    # As DefaultPartitioner.__call__(key, list(partitions_for_topic(topic)), ...) for a key.
    choices = list(partitions)
    return int(choices[hashed % len(choices)])


def report_failure(sent: asyncio.Future[Any]) -> None:
    """A produce's done callback: a send the broker finally refused is logged (Faust's ``_on_published`` does)."""
    if sent.cancelled():
        return
    exc = sent.exception()
    if exc is not None:
        log.error("record not appended", extra={"error": f"{type(exc).__name__}: {exc}"})


async def append(topic: faust.TopicT, envelopes: Iterable[Envelope]) -> None:
    """Send ``envelopes`` keyed by user, in order, without waiting for each acknowledgement.

    At-least-once still holds: Faust flushes its producer (waits for every pending
    acknowledgement) before it commits the input offsets, so an input whose outputs
    were lost in a crash is processed again. Not waiting per record lets the producer
    pipeline sends instead of paying one broker round trip per event.
    """
    for env in envelopes:
        await send(topic, (env.userid or "").encode(), encode(env))


_M = 0x5BD1E995
_WORDS: list[Callable[[bytes], tuple[int, ...]]] = [struct.Struct(f"<{n}I").unpack_from for n in range(64)]


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of ``data`` (as ``aiokafka.partitioner.murmur2``), reading 4-byte words at once.

    The api's publisher has its own (``api.publisher.murmur2``: streams may not import the api).
    """
    length = len(data)
    words = length >> 2
    unpack = _WORDS[words] if words < len(_WORDS) else struct.Struct(f"<{words}I").unpack_from
    h = 0x9747B28C ^ length
    for k in unpack(data):
        k = (k * _M) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * _M) & 0xFFFFFFFF
        h = ((h * _M) & 0xFFFFFFFF) ^ k
    extra = length & 3
    if extra:
        tail = length - extra
        if extra == 3:
            h ^= data[tail + 2] << 16
        if extra >= 2:
            h ^= data[tail + 1] << 8
        h = ((h ^ data[tail]) * _M) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * _M) & 0xFFFFFFFF
    return h ^ (h >> 15)
