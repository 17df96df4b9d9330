"""The projector's refresh of the planner statistics: the key columns of the tables it reads
or joins, nothing else (sampling every column was a fifth of Postgres's CPU per event)."""

from __future__ import annotations

from sqlalchemy import text

from projections.database import create_engine, migrate
from projections.projector import ANALYZE_TARGET, ANALYZED, Projector
from tests.integration.test_projection import apply_all, known_sequence
from tests.support.api import own_database
from tests.support.settings import isolated_settings

READ_MODELS = (
    "notifications",
    "notification_channels",
    "projected_events",
    "deliveries",
    "stat_counters",
    "user_stats",
)


async def test_refresh_analyzes_the_key_columns_of_the_tables_the_projector_reads() -> None:
    with own_database("herald_analyze") as url:
        engine = create_engine(url)
        try:
            await migrate(engine)
            async with engine.begin() as conn:
                for table in READ_MODELS:  # only the projector's ANALYZE, none of autovacuum's
                    await conn.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
            log, _ = known_sequence()
            await apply_all(engine, log.envelopes, batch=500)

            await Projector(
                isolated_settings("127.0.0.1:1", "redis://127.0.0.1:1", database_url=url), engine
            )._analyze()

            async with engine.connect() as conn:
                rows = await conn.execute(
                    text("SELECT tablename, attname FROM pg_stats WHERE tablename = ANY(:tables)"),
                    {"tables": list(READ_MODELS)},
                )
                analyzed = {(str(t), str(c)) for t, c in rows}
        finally:
            await engine.dispose()
    # Tables with rows get statistics for exactly their listed columns (user_stats has one
    # row per user here, stat_counters the latency histogram and partition counters).
    expected = {(table, column) for table, columns in ANALYZED for column in columns}
    assert analyzed == expected
    assert not {table for table, _ in analyzed} & {"deliveries"}


async def test_refresh_samples_with_its_own_statistics_target() -> None:
    """The refresh sets a small statistics target for its own transaction only."""
    with own_database("herald_analyze") as url:
        engine = create_engine(url)
        try:
            await migrate(engine)
            projector = Projector(isolated_settings("127.0.0.1:1", "redis://127.0.0.1:1", database_url=url), engine)
            await projector._analyze()
            async with engine.connect() as conn:
                target = (await conn.execute(text("SHOW default_statistics_target"))).scalar_one()
        finally:
            await engine.dispose()
    assert int(target) != ANALYZE_TARGET  # SET LOCAL: the pooled connection is back to the default
