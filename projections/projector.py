"""The projector: event log -> read models, offsets committed in the same transaction.

Offsets live in ``projector_offsets``, not in Kafka: on every partition assignment the
consumer seeks to the stored position, and a batch's rows and its new positions commit
together. A crash or a replay therefore never applies an event twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from engine.settings import Settings
from engine.topics import TopicNames
from projections import notifications
from projections.models import ProjectorOffset
from schemas.codec import decode
from schemas.errors import InvalidMessage

log = logging.getLogger(__name__)


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
        )
        self._consumer = consumer
        await consumer.start()
        consumer.subscribe([self._topic], listener=_SeekToStored(self))
        try:
            while not stopping.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=s.projector_batch_size)
                for tp, records in batches.items():
                    await self.apply_records(tp.partition, records)
        finally:
            await consumer.stop()

    async def stored_offsets(self) -> dict[int, int]:
        """Next offset to apply per partition, as committed in the database."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(ProjectorOffset.partition, ProjectorOffset.next_offset).where(ProjectorOffset.topic == self._topic)
            )
            return {int(p): int(o) for p, o in rows}

    async def apply_records(self, partition: int, records: Iterable[ConsumerRecord[bytes, bytes]]) -> None:
        """Apply ``records`` of one partition and advance its checkpoint, in one transaction."""
        records = list(records)
        if not records:
            return
        async with self._engine.begin() as conn:
            stored = await _stored_offset(conn, self._topic, partition)
            for record in records:
                if record.offset < stored:
                    continue  # already applied before a crash or rebalance
                try:
                    env = decode(record.value, list(record.headers or ()))
                except InvalidMessage as exc:
                    log.error("undecodable event skipped", extra={"offset": record.offset, "partition": partition, "error": exc.reason})
                    continue
                await notifications.apply(env.data, env, conn)
                self.applied += 1
            next_offset = max(stored, records[-1].offset + 1)
            await _store_offset(conn, self._topic, partition, next_offset)
        async with self._progress:
            self._positions[partition] = next_offset
            self._progress.notify_all()


async def _stored_offset(conn: AsyncConnection, topic: str, partition: int) -> int:
    row = await conn.execute(
        select(ProjectorOffset.next_offset).where(ProjectorOffset.topic == topic, ProjectorOffset.partition == partition)
    )
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
        assert consumer is not None
        stored = await self._projector.stored_offsets()
        for tp in assigned:
            if tp.partition in stored:
                consumer.seek(tp, stored[tp.partition])
            else:
                await consumer.seek_to_beginning(tp)
