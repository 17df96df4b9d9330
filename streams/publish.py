"""Appending envelopes to topics from inside a Faust agent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import faust

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
    """
    producer = await topic.app.maybe_start_producer()
    client = getattr(producer, "_producer", None)  # aiokafka's producer behind Faust's (started by now)
    sent: asyncio.Future[Any]
    if client is not None:
        sent = await client.send(topic.get_topic_name(), value, key=key)
    else:  # another transport: Faust's producer
        sent = await producer.send(topic.get_topic_name(), key, value, None, None, None)
    sent.add_done_callback(report_failure)
    return sent


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
