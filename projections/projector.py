"""The projector: event log -> read models, offsets committed in the same transaction.

Offsets live in ``projector_offsets``, not in Kafka: on every partition assignment the
consumer seeks to the stored position, and a batch's rows and its new positions commit
together. A crash or a replay therefore never applies an event twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord
from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, SQLAlchemyError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from engine.settings import Settings
from engine.topics import TopicNames
from projections import poison
from projections.batch import Positioned, apply_events
from projections.models import ProjectorOffset
from projections.poison import Skipped, describe
from projections.reader import read
from schemas.errors import HeraldError

log = logging.getLogger(__name__)


ANALYZE_EVERY = 20_000
"""Events applied between two refreshes of the planner statistics (Postgres)."""
LINGER_THRESHOLD = 16
"""Records in one poll that count as a backlog worth lingering for (see ``Projector._gather``)."""
RETRY_FIRST_DELAY = 0.2
"""Seconds before the first retry of a transaction that lost its database connection."""
RETRY_MAX_DELAY = 5.0
"""Longest wait between two retries (the delay doubles up to it)."""
RETRY_HORIZON = 120.0
"""Seconds of failed retries after which the projector gives up and stops (the process exits
and is restarted): well inside Kafka's poll interval, well past a database failover."""

T = TypeVar("T")


class TopicMissing(HeraldError):
    """The event log topic does not exist (nothing to project yet, or a wrong prefix)."""

    retriable = True


class Projector:
    """Consumes ``herald.events`` and keeps the read models up to date."""

    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        self._settings = settings
        self._engine = engine
        self._topic = TopicNames(settings.topic_prefix).events
        self._consumer: AIOKafkaConsumer | None = None
        self._positions: dict[int, int] = {}
        self._progress = asyncio.Condition()
        self.applied = 0
        """Events applied since start (for benchmarks and logs)."""
        self.skipped = 0
        """Events skipped since start because they could not be applied (see ``projections.poison``)."""
        self._since_analyze = 0

    async def run(self, stopping: asyncio.Event) -> None:
        """Project until ``stopping`` is set."""
        s = self._settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            group_id=s.projector_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(s.kafka_session_timeout * 1000),
            heartbeat_interval_ms=int(s.kafka_heartbeat_interval * 1000),
            rebalance_timeout_ms=int(s.kafka_rebalance_timeout * 1000),
            max_poll_records=s.projector_batch_size,
            fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
        )
        self._consumer = consumer
        await consumer.start()
        consumer.subscribe([self._topic], listener=_SeekToStored(self))
        try:
            while not stopping.is_set():
                batches = await self._gather(consumer)
                for partition, records in batches.items():
                    await self.apply_records(partition, records)
        finally:
            await consumer.stop()

    async def _gather(self, consumer: AIOKafkaConsumer) -> dict[int, list[ConsumerRecord[bytes, bytes]]]:
        """Records by partition: what is there now, plus what arrives within the linger window.

        A transaction costs about the same for 10 events as for 500, and brokers hand out a
        few record batches per fetch, so under load a short linger turns many small
        transactions into few large ones. Only a backlog lingers (a first poll of at least
        ``LINGER_THRESHOLD`` records): a lone write is projected at once, keeping
        read-your-writes fast.
        """
        s = self._settings
        out: dict[int, list[ConsumerRecord[bytes, bytes]]] = {}
        batches = await consumer.getmany(timeout_ms=200, max_records=s.projector_batch_size)
        if sum(len(r) for r in batches.values()) < LINGER_THRESHOLD:
            return {tp.partition: records for tp, records in batches.items()}
        deadline = asyncio.get_running_loop().time() + s.projector_linger_ms / 1000
        while batches:
            for tp, records in batches.items():
                out.setdefault(tp.partition, []).extend(records)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or max(len(r) for r in out.values()) >= s.projector_batch_size:
                break
            batches = await consumer.getmany(timeout_ms=int(remaining * 1000), max_records=s.projector_batch_size)
        return out

    async def stored_offsets(self) -> dict[int, int]:
        """Next offset to apply per partition, as committed in the database."""
        return await self._retrying(self._read_offsets)

    async def _read_offsets(self) -> dict[int, int]:
        async with self._engine.connect() as conn:
            stmt = select(ProjectorOffset.partition, ProjectorOffset.next_offset)
            rows = await conn.execute(stmt.where(ProjectorOffset.topic == self._topic))
            return {int(p): int(o) for p, o in rows}

    async def apply_records(self, partition: int, records: Iterable[ConsumerRecord[bytes, bytes]]) -> None:
        """Apply ``records`` of one partition and advance its checkpoint, in one transaction.

        An event that cannot be applied is skipped and recorded (``projections.poison``);
        when the database refuses the batch as a whole, its events are applied one per
        transaction to find the one at fault. Lost connections and other transient errors
        propagate (``run`` retries them).
        """
        records = list(records)
        if not records:
            return
        decoded: list[Positioned] = []
        undecodable: list[Skipped] = []
        for record in records:
            try:
                env = read(record.value, record.headers or ())
            except Exception as exc:  # noqa: BLE001 - Unreadable, or anything else one record can cause
                undecodable.append(Skipped(record.offset, None, None, "decode", describe(exc)))
                continue
            decoded.append((record.offset, env))
        await self._retrying(lambda: self._apply_isolating(partition, decoded, undecodable, records[-1].offset + 1))

    async def _apply_isolating(
        self, partition: int, decoded: list[Positioned], undecodable: list[Skipped], next_offset: int
    ) -> None:
        try:
            await self._apply(partition, decoded, undecodable, next_offset)
        except Exception as exc:
            if _transient(exc):
                raise
            log.warning(
                "the database refused a batch; applying its events one by one to find the one at fault",
                extra={"partition": partition, "next_offset": next_offset, "error": describe(exc)},
            )
            await self._apply_one_by_one(partition, decoded, undecodable)

    async def _retrying(self, operation: Callable[[], Awaitable[T]]) -> T:
        """``operation``, retried with backoff while the database is unreachable (one log line per attempt).

        Each attempt is a whole transaction that either committed or did not: the retry
        re-reads the stored offset, so nothing is lost or applied twice. Past
        ``RETRY_HORIZON`` seconds the error propagates and the projector stops (loudly).
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        delay = RETRY_FIRST_DELAY
        attempt = 0
        while True:
            try:
                return await operation()
            except Exception as exc:
                if not _transient(exc):
                    raise
                attempt += 1
                waited = loop.time() - started
                if waited + delay > RETRY_HORIZON:
                    log.error(
                        "database unreachable; giving up",
                        extra={"attempt": attempt, "waited_seconds": round(waited, 1), "error": describe(exc)},
                    )
                    raise
                log.warning(
                    "database unreachable; retrying",
                    extra={"attempt": attempt, "retry_in_seconds": delay, "error": describe(exc)},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_DELAY)

    async def _apply_one_by_one(self, partition: int, decoded: list[Positioned], undecodable: list[Skipped]) -> None:
        items: list[tuple[int, Positioned | Skipped]] = [(o, (o, env)) for o, env in decoded]
        items.extend((s.offset, s) for s in undecodable)
        for offset, item in sorted(items, key=lambda i: i[0]):
            if isinstance(item, Skipped):
                await self._apply(partition, [], [item], offset + 1)
                continue
            try:
                await self._apply(partition, [item], [], offset + 1)
            except Exception as exc:
                if _transient(exc):
                    raise
                env = item[1]
                refused = Skipped(offset, env.id, env.type, "storage", describe(exc))
                await self._apply(partition, [], [refused], offset + 1)

    async def _apply(self, partition: int, batch: list[Positioned], skipped: list[Skipped], next_offset: int) -> None:
        async with self._engine.begin() as conn:
            stored = await _stored_offset(conn, self._topic, partition)
            # Positions below the checkpoint were applied (or skipped) before a crash or rebalance.
            outcome = await apply_events(conn, partition, [(o, env) for o, env in batch if o >= stored])
            skipped = sorted([s for s in skipped if s.offset >= stored] + outcome.skipped, key=lambda s: s.offset)
            await poison.record(conn, self._topic, partition, skipped)
            next_offset = max(stored, next_offset)
            await _store_offset(conn, self._topic, partition, next_offset)
        poison.report(self._topic, partition, skipped)
        self.applied += outcome.fresh
        self.skipped += len(skipped)
        async with self._progress:
            self._positions[partition] = next_offset
            self._progress.notify_all()
        self._since_analyze += outcome.fresh
        if self._since_analyze >= ANALYZE_EVERY and self._engine.dialect.name == "postgresql":
            await self._analyze()

    async def _analyze(self) -> None:
        # Autovacuum refreshes planner statistics about once a minute; a fast-growing read
        # model (a replay, a backlog) meanwhile looks empty to the planner, whose sequential
        # scans then make every batch slower than the last. Refresh them ourselves.
        self._since_analyze = 0
        async with self._engine.begin() as conn:
            await conn.execute(text("ANALYZE notifications, notification_channels, projected_events, deliveries"))

    async def catch_up(self, *, idle_timeout: float = 2.0) -> int:
        """Project every partition up to the end of the log now, without a consumer group.

        For rebuilds and replays with no live projector running. Stops once every partition
        has passed the end offset read at the start *and* a poll comes back empty (some
        brokers, Tansu among them, under-report end offsets), or after ``idle_timeout``
        seconds without records. Returns the events applied.
        """
        s = self._settings
        # "earliest" even though every partition is positioned explicitly below: an assigned
        # partition may start resetting by the default policy ("latest") before the seek, and
        # that reset could win, skipping the records of a partition that was never projected.
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
        )
        await consumer.start()
        start = self.applied
        try:
            partitions = await _partitions(consumer, self._topic)
            tps = [TopicPartition(self._topic, p) for p in partitions]
            consumer.assign(tps)
            stored = await self.stored_offsets()
            for tp in tps:
                if tp.partition in stored:
                    consumer.seek(tp, stored[tp.partition])
                else:
                    await consumer.seek_to_beginning(tp)
            ends = await consumer.end_offsets(tps)
            while True:
                behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
                wait = idle_timeout if behind else 0.2
                batches = await consumer.getmany(timeout_ms=int(wait * 1000), max_records=s.projector_batch_size)
                for tp, records in batches.items():
                    await self.apply_records(tp.partition, records)
                if batches:
                    continue
                if behind:
                    log.warning(
                        "catch-up stopped: no records before the end offsets",
                        extra={"behind": sorted(tp.partition for tp in behind)},
                    )
                break
        finally:
            await consumer.stop()
        return self.applied - start


def _transient(exc: BaseException) -> bool:
    """A failure of the database or the connection, not of the events: retry, never skip."""
    if isinstance(exc, DBAPIError):
        return not poison.is_event_fault(exc)
    if isinstance(exc, StatementError):
        return False  # a value SQLAlchemy could not bind: the event's
    return isinstance(exc, OSError | TimeoutError | SQLAlchemyError)


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return set(partitions)
        await consumer.topics()
        await asyncio.sleep(0.1)
    raise TopicMissing(f"topic {topic} does not exist")


async def _stored_offset(conn: AsyncConnection, topic: str, partition: int) -> int:
    stmt = select(ProjectorOffset.next_offset).where(
        ProjectorOffset.topic == topic, ProjectorOffset.partition == partition
    )
    if conn.dialect.name == "postgresql":
        # Two projector instances briefly owning one partition (a rebalance) queue here.
        stmt = stmt.with_for_update()
    row = await conn.execute(stmt)
    value = row.scalar_one_or_none()
    return int(value) if value is not None else 0


async def _store_offset(conn: AsyncConnection, topic: str, partition: int, next_offset: int) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(ProjectorOffset).values(topic=topic, partition=partition, next_offset=next_offset)
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=["topic", "partition"], set_={"next_offset": next_offset})
    )


class _SeekToStored(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, resume each partition from the database checkpoint, not Kafka's."""

    def __init__(self, projector: Projector) -> None:
        self._projector = projector

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        consumer = self._projector._consumer
        if consumer is None:  # assignments only happen on a started consumer
            return
        stored = await self._projector.stored_offsets()
        for tp in assigned:
            if tp.partition in stored:
                consumer.seek(tp, stored[tp.partition])
            else:
                await consumer.seek_to_beginning(tp)
