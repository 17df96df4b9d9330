"""A user's stats come from two reads (``stat_counters``' histogram, then the packed
``user_stats`` row): they must see one snapshot, never half of a batch committed between them."""

from __future__ import annotations

import asyncio

from projections import stats
from projections.database import create_engine, migrate
from projections.queries import NotificationQueries
from tests.support.api import own_database

USER = "snap"


async def _commit_one_delivery(engine_url: str, commits: int, done: asyncio.Event) -> None:
    """``commits`` transactions, each one delivered notification: total +1 and one latency sample,
    as the projector moves both in one batch's transaction."""
    engine = create_engine(engine_url)
    row = [0] * stats.USER_WIDTH
    row[stats.TOTAL] = 1
    try:
        for _ in range(commits):
            async with engine.begin() as conn:
                await stats.add(conn, {(stats.user_scope(USER), "latency", "40"): 1})
                await stats.add_users(conn, [(USER, *row)])
            await asyncio.sleep(0)
    finally:
        done.set()
        await engine.dispose()


async def test_a_users_stats_never_show_half_of_a_batch() -> None:
    with own_database("herald_snapshot") as url:
        engine = create_engine(url)
        try:
            await migrate(engine)
            queries = NotificationQueries(engine)
            done = asyncio.Event()
            writer = asyncio.create_task(_commit_one_delivery(url, 600, done))
            reads = torn = 0
            while not done.is_set():
                figures = await queries.stats(USER)
                reads += 1
                if figures.total != figures.deliveries:
                    torn += 1
            await writer
            final = await queries.stats(USER)
        finally:
            await engine.dispose()
    assert (final.total, final.deliveries) == (600, 600)
    assert reads > 100, "the reads did not overlap the commits"
    assert torn == 0, f"{torn} of {reads} reads saw a batch half applied"
