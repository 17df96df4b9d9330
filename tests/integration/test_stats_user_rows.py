"""A user's fixed stat counters live in one ``user_stats`` row: what the projector writes there,
when the row goes away, and the migration that moves ``stat_counters``' user scopes into it and back."""

from __future__ import annotations

from typing import Any

from alembic import command
from sqlalchemy import inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from projections import stats
from projections.batch import apply_batch
from projections.database import create_engine, migrate
from projections.migrations import config
from projections.models import USER_COUNTERS, StatCounterRow, UserStatsRow
from projections.postgres_writer import PostgresWriter, driver
from tests.integration.test_projection import apply_all, known_sequence
from tests.support.api import own_database
from tests.support.event_log import Log


async def _user_row(engine: AsyncEngine, user: str) -> dict[str, int] | None:
    """The non-zero counters of ``user``'s row, or None without a row."""
    table = UserStatsRow.__table__
    async with engine.connect() as conn:
        row = (await conn.execute(select(table).where(table.c.user_id == user))).first()
    if row is None:
        return None
    return {name: int(n) for (name, _, _), n in zip(USER_COUNTERS, row[1:], strict=True) if n}


async def _user_scoped(engine: AsyncEngine) -> list[tuple[str, str, str, int]]:
    """``stat_counters`` rows under a user's scope."""
    c = StatCounterRow
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(c.scope, c.metric, c.key, c.count).where(c.scope.like("u:%")).order_by(c.scope, c.metric, c.key)
        )
        return [(str(s), str(m), str(k), int(n)) for s, m, k, n in rows]


async def test_a_users_fixed_counters_are_one_row_and_the_histogram_stays_in_stat_counters(
    empty: AsyncEngine,
) -> None:
    await migrate(empty)
    log, _ = known_sequence()
    await apply_all(empty, log.envelopes, batch=4)
    assert await _user_row(empty, "bob") == {
        "total": 1,
        "unread": 1,
        "status_delivered": 1,
        "priority_high": 1,
        "websocket_delivered": 1,
    }
    alice = await _user_row(empty, "alice")
    assert alice is not None and alice["total"] == 7 and alice["apns_retrying"] == 1
    # Only the latency histogram (open-ended buckets) is left under the users' scopes.
    assert {(scope, metric) for scope, metric, _, _ in await _user_scoped(empty)} == {
        ("u:alice", "latency"),
        ("u:bob", "latency"),
    }


async def test_a_users_row_goes_once_every_notification_of_theirs_is_deleted(empty: AsyncEngine) -> None:
    """Whichever batch creates the row and whichever empties it: a user left with nothing has no row,
    as a user who never had anything (so the rows do not depend on the batching)."""
    await migrate(empty)
    log = Log()
    first = log.accepted("dora", channels=("websocket", "email"))
    second = log.accepted("dora", priority="high")
    log.succeeded("dora", first, latency_ms=50.0)
    log.read("dora", second)
    log.deleted("dora", first)
    log.deleted("dora", second)
    offsets = list(enumerate(log.envelopes))
    async with empty.begin() as conn:
        await apply_batch(conn, 0, offsets[:4])
    assert await _user_row(empty, "dora") == {
        "total": 2,
        "unread": 1,
        "status_pending": 1,
        "status_delivered": 1,  # delivered on one channel: delivered, its email still pending
        "priority_medium": 1,
        "priority_high": 1,
        "websocket_delivered": 1,
        "websocket_pending": 1,
        "email_pending": 1,
    }
    async with empty.begin() as conn:
        await apply_batch(conn, 0, offsets[4:5])
    assert (await _user_row(empty, "dora") or {}).get("total") == 1
    async with empty.begin() as conn:
        await apply_batch(conn, 0, offsets[5:])
    assert await _user_row(empty, "dora") is None
    async with empty.connect() as conn:
        left = await stats.read(conn, user_id="dora")
    assert (left.total, left.unread, left.deliveries) == (0, 0, 1)  # a delivery counts after a delete


COUNTERS_BEFORE = [
    ("p:0", "status", "delivered", 3),
    ("p:0", "total", "", 3),
    ("u:alice", "channel", "email.pending", 1),
    ("u:alice", "channel", "websocket.delivered", 2),
    ("u:alice", "latency", "47", 2),
    ("u:alice", "priority", "high", 2),
    ("u:alice", "status", "delivered", 2),
    ("u:alice", "total", "", 2),
    ("u:alice", "unread", "", 1),
    ("u:bob", "channel", "sms.pending", 1),  # no column for it: stays where it is
    ("u:bob", "status", "delivered", 1),
    ("u:bob", "total", "", 1),
]


async def test_the_migration_moves_user_counters_into_rows_and_back(empty: AsyncEngine) -> None:
    async with empty.begin() as conn:
        await conn.run_sync(lambda sync: command.upgrade(config(sync), "v0006"))
        for scope, metric, key, n in COUNTERS_BEFORE:
            await conn.execute(
                text("INSERT INTO stat_counters (scope, metric, key, count) VALUES (:s, :m, :k, :n)"),
                {"s": scope, "m": metric, "k": key, "n": n},
            )
    expected = {
        user: stats.summarise((m, k, n) for s, m, k, n in COUNTERS_BEFORE if s == f"u:{user}")
        for user in ("alice", "bob")
    }
    assert await migrate(empty) == ["v0007"]
    assert await _user_row(empty, "alice") == {
        "total": 2,
        "unread": 1,
        "status_delivered": 2,
        "priority_high": 2,
        "websocket_delivered": 2,
        "email_pending": 1,
    }
    assert await _user_row(empty, "bob") == {"total": 1, "status_delivered": 1}
    assert await _user_scoped(empty) == [("u:alice", "latency", "47", 2), ("u:bob", "channel", "sms.pending", 1)]
    async with empty.connect() as conn:
        for user, before in expected.items():
            assert await stats.read(conn, user_id=user) == before
        assert (await stats.read(conn, user_id=None)).total == 3
    async with empty.begin() as conn:
        await conn.run_sync(lambda sync: command.downgrade(config(sync), "v0006"))
    async with empty.connect() as conn:
        rows: Any = await conn.execute(text("SELECT scope, metric, key, count FROM stat_counters"))
        assert sorted((str(s), str(m), str(k), int(n)) for s, m, k, n in rows) == COUNTERS_BEFORE
        tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    assert "user_stats" not in tables


async def test_deltas_beyond_32_bits_add_up_too() -> None:
    """The Postgres writer ships a batch's deltas as one ``int4[]``; a sum that does not fit takes
    the wide statement, with the same result."""
    width = len(USER_COUNTERS)
    with own_database("herald_ustats") as url:
        engine = create_engine(url)
        try:
            await migrate(engine)
            for total in (3, 2**40, -(2**40) - 3):
                async with engine.begin() as conn:
                    writer = PostgresWriter(await driver(conn))
                    await writer.add_user_stats([("ann", total, *[1] * (width - 1)), ("bo", 1, *[0] * (width - 1))])
            assert await _user_row(engine, "bo") == {"total": 3}
            assert await _user_row(engine, "ann") == {name: 3 for name, _, _ in USER_COUNTERS[1:]}
        finally:
            await engine.dispose()
