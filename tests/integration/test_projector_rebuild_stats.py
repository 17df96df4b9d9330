"""``herald rebuild`` sums the stat counters in memory and writes them once: same read models,
and a replay that never wrote them is refused rather than served."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from engine.settings import Settings
from engine.topics import TopicNames
from projections import projector as projector_module
from projections import stats
from projections.database import create_engine, migrate
from projections.models import ProjectorOffset, StatCounterRow
from projections.projector import REBUILDING, Projector, UnfinishedRebuild
from projections.rebuild import fingerprint, rebuild, table_checksums
from streams.admin import ensure_topics
from tests.integration.test_projection import known_sequence
from tests.support.event_log import append


async def _log(settings: Settings) -> int:
    await ensure_topics(settings)
    log, _ = known_sequence()
    await append(settings.kafka_bootstrap, TopicNames(settings.topic_prefix).events, log.envelopes)
    return len(log.envelopes)


async def _counters(settings: Settings) -> list[tuple[str, str, str, int]]:
    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            c = StatCounterRow
            rows = await conn.execute(select(c.scope, c.metric, c.key, c.count).order_by(c.scope, c.metric, c.key))
            return [(str(s), str(m), str(k), int(n)) for s, m, k, n in rows]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("limit", [projector_module.DEFERRED_STATS_LIMIT, 3])
async def test_rebuild_writes_the_same_counters_as_live_projection(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    """Written once at the end, or (a tiny limit) in many passes that move counters down and
    back to zero: the counters, and every other read model, match the live projection."""
    await _log(settings)
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
        await Projector(settings, engine).catch_up(batch_size=2)  # many small transactions, as live
        live = await table_checksums(engine)
        live_counters = await _counters(settings)
        async with engine.connect() as conn:
            live_stats = await stats.read(conn, user_id="alice")
        monkeypatch.setattr(projector_module, "DEFERRED_STATS_LIMIT", limit)
        await rebuild(settings, engine)
        rebuilt = await table_checksums(engine)
        async with engine.connect() as conn:
            rebuilt_stats = await stats.read(conn, user_id="alice")
    finally:
        await engine.dispose()
    assert live_counters, "the log moves counters"
    assert await _counters(settings) == live_counters
    assert rebuilt == live
    assert rebuilt_stats == live_stats
    assert live_stats.total == 7 and live_stats.unread > 0


async def test_a_replay_killed_before_writing_its_counters_is_refused(settings: Settings) -> None:
    """The marker a killed ``herald rebuild`` leaves (its counters were only in memory) stops the
    live projector and a plain catch-up; ``herald rebuild`` starts over and removes it."""
    n = await _log(settings)
    topic = TopicNames(settings.topic_prefix).events
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
        reference = await rebuild(settings, engine)
        expected = await fingerprint(engine)
        async with engine.begin() as conn:  # as a rebuild killed mid-replay leaves it
            await conn.execute(
                ProjectorOffset.__table__.insert().values(topic=topic, partition=REBUILDING, next_offset=0)
            )
        with pytest.raises(UnfinishedRebuild):
            await Projector(settings, engine).catch_up()
        stopping = asyncio.Event()
        with pytest.raises(UnfinishedRebuild):
            await asyncio.wait_for(Projector(settings, engine).run(stopping), 30)
        assert await rebuild(settings, engine) == reference == n
        assert await fingerprint(engine) == expected
        async with engine.connect() as conn:
            o = ProjectorOffset
            marker = await conn.execute(select(o.partition).where(o.topic == topic, o.partition == REBUILDING))
            assert marker.first() is None
    finally:
        await engine.dispose()
