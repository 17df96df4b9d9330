"""What the console's overview reads from the broker: consumer lag per role and dead letters per minute.

Lag is how far each role is behind the end of its input: the worker's consumer groups
by their committed offsets on their input topics (``HERALD_APP_ID`` on requests,
deliveries and scheduled; in a priority split, each request partition under the group
that committed furthest on it, e.g. ``herald-high``), the projector by the positions it commits with its rows
(``projector_offsets``; it commits none to Kafka). Dead letters per minute come from the
dead-letter topic's record timestamps without reading the records: ``offsets_for_times``
at each minute boundary, the difference of two offsets being the records in between (one
ListOffsets round trip per minute with records, at most 61). A broker whose time index
does not give the record's own timestamp back (Tansu, checked on one record per probe)
has its last ``SCAN_RECORDS`` records per partition read instead. Figures are cached for
``CACHE_SECONDS`` and fetched by one request at a time, so any number of open console
pages cost the broker one probe a second; a probe is bounded by ``TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from engine.settings import Settings
from engine.topics import TopicNames, worker_groups

log = logging.getLogger(__name__)

CACHE_SECONDS = 1.0
"""How long one probe's figures are served (a page refreshing every 2 s costs one probe)."""
TIMEOUT_SECONDS = 5.0
"""Longest a probe may take before the overview answers without the broker's figures."""
SCAN_RECORDS = 10_000
"""Records per partition read when the broker's time index cannot be used (see ``_dead_letters``)."""
MAX_CACHED = 64
"""Distinct windows cached at once (``minutes`` is 1..60)."""

Positions = Callable[[str], Awaitable[dict[int, int]]]
"""Next offset the projector applies, per partition of a topic (from the read models)."""


@dataclass(frozen=True, slots=True)
class Lag:
    """How many records one role has not processed yet (``None``: the group committed nothing)."""

    role: str
    group: str
    lag: int | None
    by_topic: dict[str, int]
    """The same per input topic (scheduler ticks keep ``scheduled`` a few records behind)."""

    def as_json(self) -> dict[str, object]:
        """The JSON object."""
        return {"role": self.role, "group": self.group, "lag": self.lag, "by_topic": self.by_topic}


@dataclass(frozen=True, slots=True)
class BrokerFigures:
    """One probe: lag per role and dead letters per minute from ``start_ms`` (or why they are missing)."""

    lag: list[Lag]
    dead_letters: list[int]
    error: str | None = None


def _lag(role: str, group: str, partitions: dict[TopicPartition, int]) -> Lag:
    by_topic: dict[str, int] = {}
    for tp, behind in partitions.items():
        by_topic[tp.topic] = by_topic.get(tp.topic, 0) + behind
    return Lag(role, group, sum(by_topic.values()), by_topic)


class LogProbe:
    """Reads lag and dead-letter counts from the broker, with a cache and one probe at a time."""

    def __init__(self, settings: Settings, positions: Positions) -> None:
        self._settings = settings
        self._names = TopicNames(settings.topic_prefix)
        self._positions = positions
        self._consumer: AIOKafkaConsumer | None = None
        """Offsets and metadata only: never assigned, so its metadata covers every topic."""
        self._reader: AIOKafkaConsumer | None = None
        """Reads records (assigned to one partition at a time)."""
        self._admin: AIOKafkaAdminClient | None = None
        self._lock = asyncio.Lock()
        self._cache: dict[tuple[int, int], tuple[float, BrokerFigures]] = {}

    async def figures(self, start: datetime, minutes: int) -> BrokerFigures:
        """Lag now, and dead letters in each of ``minutes`` minutes from ``start`` (a minute boundary)."""
        key = (int(start.timestamp()), minutes)
        async with self._lock:
            cached = self._cache.get(key)
            if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
                return cached[1]
            try:
                found = await asyncio.wait_for(self._probe(key[0] * 1000, minutes), TIMEOUT_SECONDS)
            except Exception as exc:  # noqa: BLE001 - an odd answer too: the page says why, the rest is served
                log.warning("broker figures unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
                await self._reset()
                found = BrokerFigures([], [], error=f"the broker did not answer as expected ({type(exc).__name__})")
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[key] = (time.monotonic(), found)
            return found

    async def close(self) -> None:
        """Stop the broker clients (the next probe starts them again)."""
        async with self._lock:
            await self._reset()

    async def _clients(self) -> tuple[AIOKafkaConsumer, AIOKafkaAdminClient]:
        if self._consumer is None or self._reader is None or self._admin is None:
            await self._reset()
            timeout_ms = int(TIMEOUT_SECONDS * 1000)
            bootstrap = self._settings.kafka_bootstrap
            consumer = AIOKafkaConsumer(
                bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=timeout_ms
            )
            reader = AIOKafkaConsumer(
                bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=timeout_ms
            )
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
            self._consumer, self._reader, self._admin = consumer, reader, admin
            await consumer.start()
            await reader.start()
            await admin.start()
        return self._consumer, self._admin

    async def _reset(self) -> None:
        consumer, reader, admin = self._consumer, self._reader, self._admin
        self._consumer = self._reader = self._admin = None
        for client in (consumer, reader):
            if client is not None:
                await client.stop()
        if admin is not None:
            await admin.close()

    def _reading(self) -> AIOKafkaConsumer:
        if self._reader is None:
            raise KafkaError("the probe's reader is not started")
        return self._reader

    async def _probe(self, start_ms: int, minutes: int) -> BrokerFigures:
        consumer, admin = await self._clients()
        await consumer.topics()  # fresh metadata: topics created since the last probe
        lag = [*await self._worker_lags(consumer, admin), await self._projector_lag(consumer)]
        return BrokerFigures(lag, await self._dead_letters(consumer, start_ms, minutes))

    async def _worker_lags(self, consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient) -> list[Lag]:
        """One row per worker consumer group that consumes something, ``HERALD_APP_ID``'s first.

        In a priority split (``worker-high`` in compose) ``requests.high`` is ingested by the
        group ``herald-high``, not ``herald``: each request partition counts for the group
        that committed furthest on it (the one ingesting it now; a group left behind by a
        split keeps its old offsets), the sinks' and the scheduler's topics for ``HERALD_APP_ID``.
        """
        names = self._names
        own = self._settings.app_id

        def partitions(topics: tuple[str, ...]) -> list[TopicPartition]:
            return [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]

        requests = partitions(tuple(names.requests))
        sinks = partitions((*names.deliveries, names.scheduled))
        groups = [own, *sorted(worker_groups(own) - {own})]
        # The worker's input partitions, named: its table changelogs are read, not consumed.
        best: dict[TopicPartition, tuple[str, int]] = {}
        for group in groups:
            asked = requests + sinks if group == own else requests
            committed = await admin.list_consumer_group_offsets(group, partitions=asked) if asked else {}
            for tp, meta in committed.items():
                if meta.offset < 0 or (group != own and tp not in requests):
                    continue
                held = best.get(tp)
                if held is None or meta.offset > held[1] or (meta.offset == held[1] and held[0] == own):
                    best[tp] = (group, meta.offset)  # a tie after a take-over: the split group ingests
        if not best:
            return [Lag("worker", own, None, {})]
        ends = await consumer.end_offsets(list(best))
        rows = []
        for group in groups:
            mine = {tp: max(0, ends[tp] - offset) for tp, (g, offset) in best.items() if g == group}
            if mine:
                rows.append(_lag("worker", group, mine))
        return rows

    async def _projector_lag(self, consumer: AIOKafkaConsumer) -> Lag:
        topic = self._names.events
        group = self._settings.projector_group
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            return Lag("projector", group, None, {})
        positions = await self._positions(topic)
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return _lag("projector", group, {tp: max(0, end - positions.get(tp.partition, 0)) for tp, end in ends.items()})

    async def _dead_letters(self, consumer: AIOKafkaConsumer, start_ms: int, minutes: int) -> list[int]:
        topic = self._names.deadletter
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return [0] * minutes
        ends = await consumer.end_offsets(tps)
        firsts = await consumer.beginning_offsets(tps)
        live = [tp for tp in tps if ends[tp] > firsts[tp]]
        if not live:
            return [0] * minutes
        # offsets[i][tp]: first offset at or after boundary i (the end once no record is that late).
        offsets: list[dict[TopicPartition, int]] = []
        checked = False
        for i in range(minutes + 1):
            if not live:
                offsets.append(dict(ends))
                continue
            found = await consumer.offsets_for_times(dict.fromkeys(live, start_ms + i * 60_000))
            row = dict(ends)
            for tp in list(live):
                hit = found.get(tp)
                if hit is None or hit.offset < 0 or hit.timestamp < 0:
                    live.remove(tp)  # no later record: every later boundary is the end too
                    continue
                if not checked:
                    checked = True
                    if await self._timestamp_at(tp, hit.offset) != hit.timestamp:
                        # A broker whose time index does not answer with the record's own
                        # timestamp (Tansu): count from the records themselves, bounded.
                        return await self._scan(tps, firsts, ends, start_ms, minutes)
                row[tp] = hit.offset
            offsets.append(row)
        return [sum(max(0, offsets[i + 1][tp] - offsets[i][tp]) for tp in tps) for i in range(minutes)]

    async def _timestamp_at(self, tp: TopicPartition, offset: int) -> int | None:
        """Timestamp of the record at ``offset`` (``None`` if it cannot be read)."""
        consumer = self._reading()
        consumer.assign([tp])
        consumer.seek(tp, offset)
        polled = await consumer.getmany(tp, timeout_ms=int(TIMEOUT_SECONDS * 1000), max_records=1)
        records = polled.get(tp, [])
        return int(records[0].timestamp) if records and records[0].offset == offset else None

    async def _scan(
        self,
        tps: list[TopicPartition],
        firsts: dict[TopicPartition, int],
        ends: dict[TopicPartition, int],
        start_ms: int,
        minutes: int,
    ) -> list[int]:
        """Dead letters per minute from the timestamps of the last ``SCAN_RECORDS`` records per partition."""
        consumer = self._reading()
        counts = [0] * minutes
        for tp in tps:
            position = max(firsts[tp], ends[tp] - SCAN_RECORDS)
            if position >= ends[tp]:
                continue
            consumer.assign([tp])
            consumer.seek(tp, position)
            while position < ends[tp]:
                polled = await consumer.getmany(tp, timeout_ms=int(TIMEOUT_SECONDS * 1000), max_records=1000)
                records = polled.get(tp, [])
                if not records:
                    break  # the probe's deadline bounds the wait; a short read counts what it saw
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    minute = (record.timestamp - start_ms) // 60_000
                    if 0 <= minute < minutes:
                        counts[minute] += 1
                position = records[-1].offset + 1
        return counts
