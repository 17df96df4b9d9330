"""Projector faults (issue 14): a database connection cut mid-transaction, ids longer than their column.

Each runs a live projector against the real broker and Postgres: the projector retries
or skips, keeps running, and every good event ends up applied exactly once.
"""

from __future__ import annotations

import logging

import psycopg
import pytest
from aiokafka.structs import ConsumerRecord
from sqlalchemy import func, select

from engine.settings import Settings
from engine.topics import TopicNames
from herald.stack import run_stack
from projections.database import create_engine, migrate
from projections.models import EventRow, NotificationRow, ProjectorOffset, SkippedEventRow
from projections.projector import Projector
from projections.queries import NotificationQueries
from schemas.codec import encode
from streams.admin import ensure_topics
from tests.support.event_log import Log, append
from tests.support.postgres_locks import waiting_on_a_lock
from tests.support.waiting import eventually


async def test_a_cut_database_connection_is_retried_and_nothing_is_lost_or_applied_twice(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    await ensure_topics(settings)
    topic = TopicNames(settings.topic_prefix).events
    log = Log(seed="cut")
    ids = [log.accepted("alice", title=f"before {i}") for i in range(3)]
    await append(settings.kafka_bootstrap, topic, log.envelopes)
    dsn = settings.database_url.replace("+psycopg", "")
    async with run_stack(settings, worker=False, api=False, projector=True) as stack:
        assert stack.engine is not None
        queries = NotificationQueries(stack.engine)
        await eventually(lambda: queries.get("alice", ids[-1]), timeout=30, what="the first events projected")
        locker = await psycopg.AsyncConnection.connect(dsn)
        admin = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        try:
            # Hold the checkpoint row so that the projector's next transaction waits inside
            # Postgres: the cut then lands mid-transaction, every time.
            await locker.execute("SELECT * FROM projector_offsets FOR UPDATE")
            start = len(log.envelopes)
            ids += [log.accepted("alice", title=f"after {i}") for i in range(3)]
            for nid in ids[:3]:
                log.succeeded("alice", nid, latency_ms=30.0)
            await append(settings.kafka_bootstrap, topic, log.envelopes[start:])

            await eventually(lambda: waiting_on_a_lock(admin), timeout=30, what="the projector inside a transaction")
            with caplog.at_level(logging.WARNING, logger="projections.projector"):
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid NOT IN (pg_backend_pid(), %s)",
                    [locker.info.backend_pid],
                )
                await locker.rollback()

                async def all_projected() -> bool:
                    rows = [await queries.get("alice", nid) for nid in ids]
                    return all(rows) and [r["status"] for r in rows if r] == ["delivered"] * 3 + ["pending"] * 3

                await eventually(all_projected, timeout=30, what="every event projected after the cut")
        finally:
            await locker.close()
            await admin.close()
        assert all(not task.done() for task in stack.tasks), "the projector stopped"
        retries = [r for r in caplog.records if r.getMessage() == "database unreachable; retrying"]
        assert retries and all(r.levelno == logging.WARNING for r in retries)
        stats = (await queries.stats("alice")).as_json()
        assert stats["total"] == 6
        assert stats["by_status"]["delivered"] == 3
        assert stats["delivery_latency_ms"]["count"] == 3
        async with stack.engine.connect() as conn:
            assert await conn.scalar(select(func.count()).select_from(EventRow)) == 9


async def test_ids_sharing_their_first_200_characters_are_skipped_not_truncated(settings: Settings) -> None:
    await ensure_topics(settings)
    topic = TopicNames(settings.topic_prefix).events
    log = Log(seed="long")
    stem = "n" * 200
    good = log.accepted("alice", title="good")
    # Written by an edge that did not yet refuse over-long ids: the same first 200 characters.
    long_ids = [log.accepted("alice", stem + "-first"), log.accepted("alice", stem + "-second")]
    log.succeeded("alice", long_ids[0])
    also_good = log.accepted("alice", title="also good")
    # All in the log before the projector starts: they arrive in one batch.
    await append(settings.kafka_bootstrap, topic, log.envelopes)
    async with run_stack(settings, worker=False, api=False, projector=True) as stack:
        assert stack.engine is not None
        queries = NotificationQueries(stack.engine)
        await eventually(lambda: queries.get("alice", also_good), timeout=30, what="the good events projected")
        assert await queries.get("alice", good) is not None
        async with stack.engine.connect() as conn:
            skipped = (await conn.execute(select(SkippedEventRow).order_by(SkippedEventRow.offset))).all()
            stored_ids = set((await conn.execute(select(NotificationRow.id))).scalars())
        start = len(log.envelopes)
        later = log.accepted("alice", title="later")
        await append(settings.kafka_bootstrap, topic, log.envelopes[start:])
        await eventually(lambda: queries.get("alice", later), timeout=30, what="events after them projected")
        assert all(not task.done() for task in stack.tasks), "the projector stopped"
    assert stored_ids == {good, also_good}  # nothing truncated to 200 characters
    assert [(r.event_type, r.event_id) for r in skipped] == [
        ("notification.accepted", log.envelopes[1].id),
        ("notification.accepted", log.envelopes[2].id),
        ("delivery.succeeded", log.envelopes[3].id),
    ]
    assert all("longer than its limit of 200" in r.reason for r in skipped)
    assert [r.offset for r in skipped] == [1, 2, 3]


async def test_a_value_the_database_refuses_is_isolated_and_skipped_alone(settings: Settings) -> None:
    log = Log(seed="refused")
    before = log.accepted("alice", title="before")
    log.accepted("alice", title="refused", category="c" * 150)  # the column holds 100 characters
    after = log.accepted("alice", title="after")
    log.succeeded("alice", before)
    topic = TopicNames(settings.topic_prefix).events
    records = [
        ConsumerRecord(topic, 0, offset, 0, 0, b"alice", encode(env), None, 5, 100, ())
        for offset, env in enumerate(log.envelopes)
    ]
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
        projector = Projector(settings, engine)
        await projector.apply_records(0, records)  # one batch: the database refuses it whole
        queries = NotificationQueries(engine)
        assert (await queries.get("alice", before) or {}).get("status") == "delivered"
        assert await queries.get("alice", after) is not None
        async with engine.connect() as conn:
            skipped = (await conn.execute(select(SkippedEventRow))).all()
            offsets = (await conn.execute(select(ProjectorOffset.next_offset))).scalars().all()
    finally:
        await engine.dispose()
    assert [(r.offset, r.event_id) for r in skipped] == [(1, log.envelopes[1].id)]
    assert "value too long" in skipped[0].reason
    assert offsets == [4]
    assert projector.applied == 3 and projector.skipped == 1
