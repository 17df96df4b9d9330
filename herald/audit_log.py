"""Reading a Herald topic straight from Kafka for the audit commands (never the read models).

One consumer without a group (nothing is committed, nothing is written), every partition
assigned, each read from its range's first offset up to the end offset seen at the start:
records appended while a command runs are left for the next run, so an export is a
snapshot. Errors are one-line ``LogUnavailable`` (broker unreachable, topic missing).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.structs import ConsumerRecord

from engine.audit_range import Range
from engine.settings import Settings
from schemas.errors import HeraldError

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"
"""One record of a topic as aiokafka hands it over."""
CONNECT_TIMEOUT_SECONDS = 10.0
"""How long to try to reach the broker before saying it is unreachable."""
POLL_RECORDS = 5000
"""Records per poll at most."""
CLOCK_MARGIN_MS = 60_000
"""Time lookups seek this much earlier (start) or later (end) than asked, then filter record by
record: record timestamps are the producers' clocks, not strictly ordered within a partition,
and some brokers index them loosely (Tansu answers a lookup with its own append time)."""
IDLE_POLLS = 50
"""Empty polls in a row (200 ms each) after which a partition short of its end offset is an error."""


class LogUnavailable(HeraldError):
    """The broker cannot be reached or the topic does not exist."""

    retriable = True


class EmptySelection(LogUnavailable):
    """The selection matched no event (nothing is written)."""

    retriable = False


@dataclass(frozen=True, slots=True)
class Span:
    """Offsets of one partition to read: ``start`` inclusive, ``end`` exclusive."""

    partition: int
    start: int
    end: int


@asynccontextmanager
async def consumer_for(settings: Settings) -> AsyncIterator[AIOKafkaConsumer]:
    """A started consumer with no group (it commits nothing), stopped on exit."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        request_timeout_ms=int(CONNECT_TIMEOUT_SECONDS * 1000),
    )
    try:
        await asyncio.wait_for(consumer.start(), CONNECT_TIMEOUT_SECONDS)
    except (KafkaError, OSError, TimeoutError) as exc:
        await consumer.stop()
        raise LogUnavailable(
            f"cannot reach the Kafka broker at {settings.kafka_bootstrap} ({type(exc).__name__})"
        ) from None
    try:
        yield consumer
    finally:
        await consumer.stop()


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    """The topic's partitions; ``LogUnavailable`` when it does not exist."""
    try:
        await consumer.topics()  # refresh metadata
    except KafkaConnectionError:
        raise LogUnavailable("lost the connection to the Kafka broker") from None
    found = consumer.partitions_for_topic(topic)
    if not found:
        raise LogUnavailable(f"topic {topic} does not exist (wrong HERALD_TOPIC_PREFIX, or nothing logged yet)")
    return sorted(found)


async def spans(consumer: AIOKafkaConsumer, topic: str, parts: list[int], selection: Range) -> list[Span]:
    """What to read of each partition for ``selection`` (empty partitions left out)."""
    tps = [TopicPartition(topic, p) for p in parts]
    firsts = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)
    by_time: dict[TopicPartition, int | None] = {}
    start_ms = selection.start_ms()
    if start_ms is not None:
        by_time = {tp: await offset_at(consumer, tp, start_ms - CLOCK_MARGIN_MS) for tp in tps}
    end_ms = selection.end.time_ms
    if end_ms is not None:
        for tp in tps:
            after = await offset_at(consumer, tp, end_ms + CLOCK_MARGIN_MS)
            if after is not None:
                ends[tp] = min(ends[tp], after)
    out = []
    for tp in tps:
        start, end = firsts[tp], ends[tp]
        if tp in by_time:
            # No record at or after the time: nothing to read in this partition.
            start = end if by_time[tp] is None else max(start, by_time[tp] or 0)
        first = selection.first_offset(tp.partition)
        if first is not None:
            start = max(start, first)
        last = selection.last_offset(tp.partition)
        if last is not None:
            end = min(end, last + 1)
        if start < end:
            out.append(Span(tp.partition, start, end))
    return out


async def offset_at(consumer: AIOKafkaConsumer, tp: TopicPartition, timestamp_ms: int) -> int | None:
    """First offset whose record timestamp is at or after ``timestamp_ms``; ``None`` when there is none."""
    found = (await consumer.offsets_for_times({tp: max(0, timestamp_ms)})).get(tp)
    # Kafka answers "none" with null; Tansu with offset 0 and timestamp -1.
    if found is None or found.timestamp < 0:
        return None
    return int(found.offset)


async def read(
    consumer: AIOKafkaConsumer,
    topic: str,
    todo: list[Span],
    *,
    progress: Callable[[int], None] | None = None,
) -> AsyncIterator[list[Record]]:
    """Batches of the records in ``todo``, each batch from one partition in offset order.

    ``progress(n)`` is called with the number of records read since the last call.
    """
    remaining = {s.partition: s for s in todo}
    if not remaining:
        return
    tps = {p: TopicPartition(topic, p) for p in remaining}
    consumer.assign(list(tps.values()))
    for p, span in remaining.items():
        consumer.seek(tps[p], span.start)
    idle = 0
    while remaining:
        polled = await consumer.getmany(*[tps[p] for p in remaining], timeout_ms=200, max_records=POLL_RECORDS)
        if not polled:
            idle += 1
            if idle >= IDLE_POLLS:
                short = ", ".join(str(p) for p in sorted(remaining))
                raise LogUnavailable(f"partition(s) {short} of {topic} stopped short of their end offsets")
            continue
        idle = 0
        for tp, records in polled.items():
            found = remaining.get(tp.partition)
            if found is None:
                continue
            span = found
            keep = [r for r in records if r.offset < span.end]
            if progress is not None:
                progress(len(keep))
            if keep:
                yield keep
            if records[-1].offset + 1 >= span.end:
                del remaining[tp.partition]
                consumer.pause(tp)
