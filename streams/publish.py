"""Appending envelopes to topics from inside a Faust agent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import faust
from aiokafka.partitioner import DefaultPartitioner
from faust.types import AppT

from engine.partitioning import KeyPartitions
from schemas.codec import encode
from schemas.envelope import Envelope
from streams.internals import append_to_open_batch

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
    (``partition_of``), worked out here with a key's hash remembered. When that partition
    has a batch lingering with room for the record, the record is added to it at once
    (``streams.internals.append_to_open_batch``: what aiokafka's ``send`` would do, without
    its two coroutines and checks around it); otherwise it goes through ``send``.
    """
    producer, client = await producer_of(topic.app)
    sent: asyncio.Future[Any] | None
    name = topic.get_topic_name()
    if client is not None:
        partition = partition_of(client, name, key)
        sent = None if partition is None else append_to_open_batch(client, name, partition, key, value)
        if sent is None:
            sent = await client.send(name, value, key=key, partition=partition)
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


_keys = KeyPartitions()
"""The worker's remembered key hashes (``engine.partitioning``)."""


def partition_of(client: Any, topic: str, key: bytes) -> int | None:
    """The partition aiokafka's default partitioner gives ``key`` in ``topic``; ``None`` to let ``client`` choose.

    Worked out here (``engine.partitioning``: a faster murmur2, a key's hash remembered).
    ``None`` (the producer partitions itself, after waiting for them) while the topic's
    partitions are not known yet, and for a producer with another partitioner.
    """
    if type(client._partitioner) is not DefaultPartitioner:
        return None
    partitions = client.client.cluster.partitions_for_topic(topic)
    if not partitions:
        return None
    return _keys.choose(key, partitions)


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
