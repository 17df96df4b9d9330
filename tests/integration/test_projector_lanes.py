"""The projector's partitions are applied in lanes of their own: one partition whose transaction
waits inside Postgres does not hold up the others, and it catches up once released; a backlog's
batches keep their connections from one transaction to the next.

Runs a live projector against the real broker and Postgres.
"""

from __future__ import annotations

from typing import Any

import psycopg
from aiokafka.partitioner import murmur2
from sqlalchemy import event
from sqlalchemy.pool import QueuePool

from engine.settings import Settings
from engine.topics import TopicNames
from herald.stack import run_stack
from projections.database import create_engine, migrate
from projections.projector import Projector
from projections.queries import NotificationQueries
from streams.admin import ensure_topics
from tests.support.event_log import Log, append
from tests.support.postgres_locks import waiting_on_a_lock
from tests.support.waiting import eventually


def _partition(user: str, partitions: int) -> int:
    """Kafka's default partition of a record keyed by ``user`` (what ``append`` relies on)."""
    return int(murmur2(user.encode()) & 0x7FFFFFFF) % partitions


async def test_a_partition_waiting_on_the_database_does_not_hold_up_the_others(settings: Settings) -> None:
    await ensure_topics(settings)
    topic = TopicNames(settings.topic_prefix).events
    slow, fast = "alice", "erin"
    held_partition = _partition(slow, settings.topic_partitions)
    assert held_partition != _partition(fast, settings.topic_partitions)
    log = Log(seed="lanes")
    first = [log.accepted(slow, title="first"), log.accepted(fast, title="first")]
    await append(settings.kafka_bootstrap, topic, log.envelopes)
    dsn = settings.database_url.replace("+psycopg", "")
    async with run_stack(settings, worker=False, api=False, projector=True) as stack:
        assert stack.engine is not None
        queries = NotificationQueries(stack.engine)
        await eventually(lambda: queries.get(slow, first[0]), timeout=30, what="the first events projected")
        await eventually(lambda: queries.get(fast, first[1]), timeout=30, what="the first events projected")
        locker = await psycopg.AsyncConnection.connect(dsn)
        admin = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        try:
            # Hold one partition's checkpoint row: its next transaction waits inside Postgres.
            await locker.execute("SELECT * FROM projector_offsets WHERE partition = %s FOR UPDATE", [held_partition])
            start = len(log.envelopes)
            held = log.accepted(slow, title="held")
            await append(settings.kafka_bootstrap, topic, log.envelopes[start:])

            await eventually(
                lambda: waiting_on_a_lock(admin), timeout=30, what="the held partition's transaction waiting"
            )
            # Meanwhile the other partition's events keep coming, each one after the last is projected.
            for i in range(3):
                start = len(log.envelopes)
                meanwhile = log.accepted(fast, title=f"meanwhile {i}")
                await append(settings.kafka_bootstrap, topic, log.envelopes[start:])

                async def projected(nid: str = meanwhile) -> dict[str, Any] | None:
                    return await queries.get(fast, nid)

                await eventually(projected, timeout=30, what=f"event {i} of the free partition")
            assert await queries.get(slow, held) is None
            assert await waiting_on_a_lock(admin), "the held partition's transaction is still waiting"
        finally:
            await locker.rollback()
            await locker.close()
            await admin.close()
        row = await eventually(lambda: queries.get(slow, held), timeout=30, what="the held partition caught up")
        assert row["title"] == "held"
        assert all(not task.done() for task in stack.tasks), "the projector stopped"
        assert (await queries.stats(slow)).as_json()["total"] == 2
        assert (await queries.stats(fast)).as_json()["total"] == 4


async def test_a_backlog_keeps_its_connections_between_batches_and_hands_them_back(settings: Settings) -> None:
    """Each batch is a transaction; a batch that follows another takes the connection the other
    committed on rather than a pooled one (a checkout pings the database): many transactions,
    a few checkouts, and none left checked out once the replay ends."""
    await ensure_topics(settings)
    log = Log(seed="keep")
    for i in range(60):
        log.accepted(f"user-{i % 6}", title=f"n {i}")
    await append(settings.kafka_bootstrap, TopicNames(settings.topic_prefix).events, log.envelopes)
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
        checkouts: list[object] = []
        event.listen(engine.sync_engine, "checkout", lambda *_: checkouts.append(None))
        transactions: list[int] = []
        applied = await Projector(settings, engine).catch_up(
            batch_size=2, progress=lambda done, total: transactions.append(done)
        )
        assert applied == 60
        assert len(transactions) - 1 >= 30  # the first report comes before any transaction
        assert len(checkouts) < len(transactions) // 2
        pool = engine.sync_engine.pool
        assert isinstance(pool, QueuePool)
        assert pool.checkedout() == 0
    finally:
        await engine.dispose()
