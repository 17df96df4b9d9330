"""The projection contract, run against every storage backend (Postgres and SQLite).

A known event sequence goes through ``apply_batch``; the rows and stats it leaves are
checked, and so is idempotency: applying events again, in other batch sizes or after
the offsets were reset, changes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.batch import apply_batch
from projections.database import create_engine, migrate
from projections.models import READ_MODELS, Base, ProjectorOffset
from projections.queries import ListFilter, NotificationQueries
from projections.rebuild import checksum
from schemas.envelope import Envelope
from tests.support.api import own_database
from tests.support.event_log import Log


@pytest.fixture(params=["postgresql", "sqlite"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        eng = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'herald.db'}")
        await migrate(eng)
        yield eng
        await eng.dispose()
        return
    with own_database("herald_proj") as url:
        eng = create_engine(url)
        await migrate(eng)
        yield eng
        await eng.dispose()


def known_sequence() -> tuple[Log, dict[str, str]]:
    log = Log(seed="known")
    ids = {
        "delivered": log.accepted("alice", priority="high", channels=("websocket", "email"), category="deploy"),
        "deferred": log.accepted("alice", priority="low"),
        "failed": log.accepted("alice", priority="medium", channels=("email",)),
        "retrying": log.accepted("alice", priority="medium", channels=("apns",)),
        "read": log.accepted("alice", priority="high"),
        "deleted": log.accepted("alice", priority="low"),
        "bob": log.accepted("bob", priority="high"),
    }
    log.succeeded("alice", ids["delivered"], latency_ms=100.0)
    log.deferred("alice", ids["deferred"])
    log.failed("alice", ids["failed"], "email", attempt=1, retriable=True)
    log.retry("alice", ids["failed"], "email", attempt=2)
    log.failed("alice", ids["failed"], "email", attempt=2, retriable=True)
    log.abandoned("alice", ids["failed"], "email", attempts=2)
    log.failed("alice", ids["retrying"], "apns", attempt=1, retriable=True)
    log.retry("alice", ids["retrying"], "apns", attempt=2)
    log.succeeded("alice", ids["read"], latency_ms=300.0)
    log.read("alice", ids["read"])
    log.read("alice", ids["read"])  # a second read (another device): same state
    log.deleted("alice", ids["deleted"])
    log.succeeded("bob", ids["bob"], latency_ms=200.0)
    ids["rejected"] = log.rejected("alice")
    ids["rate_limited"] = log.rate_limited("alice")
    return log, ids


async def apply_all(engine: AsyncEngine, envelopes: list[Envelope], *, batch: int, first_offset: int = 0) -> None:
    positioned = [(first_offset + i, env) for i, env in enumerate(envelopes)]
    for start in range(0, len(positioned), batch):
        async with engine.begin() as conn:
            await apply_batch(conn, 0, positioned[start : start + batch])


async def test_known_sequence_gives_expected_rows_and_stats(engine: AsyncEngine) -> None:
    log, ids = known_sequence()
    await apply_all(engine, log.envelopes, batch=500)
    q = NotificationQueries(engine)

    statuses = {name: (await q.get("alice", nid) or {}).get("status") for name, nid in ids.items() if name != "bob"}
    assert statuses == {
        "delivered": "delivered",
        "deferred": "pending",
        "failed": "failed",
        "retrying": "pending",
        "read": "delivered",
        "deleted": None,
        "rejected": "rejected",
        "rate_limited": "rate_limited",
    }
    delivered = await q.get("alice", ids["delivered"], deliveries=True)
    assert delivered is not None
    assert delivered["channel_states"] == {"websocket": "delivered", "email": "pending"}
    assert [d["outcome"] for d in delivered["deliveries"]] == ["succeeded"]
    failed = await q.get("alice", ids["failed"], deliveries=True)
    assert failed is not None
    assert failed["attempts"] == 2
    assert failed["error"] == "gave up"
    assert [d["outcome"] for d in failed["deliveries"]] == ["failed", "retry_scheduled", "failed", "abandoned"]
    assert (await q.get("alice", ids["read"]) or {})["read_at"] is not None
    assert await q.get("bob", ids["delivered"]) is None  # not bob's

    page = await q.page("alice", filters=ListFilter(priorities=("high",)))
    assert {i["id"] for i in page.items} == {ids["delivered"], ids["read"]}
    page = await q.page("alice", filters=ListFilter(channel="email"))
    assert {i["id"] for i in page.items} == {ids["delivered"], ids["failed"]}
    page = await q.page("alice", filters=ListFilter(unread=False))
    assert [i["id"] for i in page.items] == [ids["read"]]

    mine = (await q.stats("alice")).as_json()
    assert mine["total"] == 7  # the deleted one is gone
    assert mine["unread"] == 6
    assert {k: v for k, v in mine["by_status"].items() if v} == {
        "delivered": 2,
        "pending": 2,
        "failed": 1,
        "rejected": 1,
        "rate_limited": 1,
    }
    assert mine["by_priority"] == {"high": 2, "medium": 3, "low": 2}
    assert mine["by_channel"] == {
        "websocket": {"delivered": 2, "deferred": 1},
        "email": {"pending": 1, "abandoned": 1},
        "apns": {"retrying": 1},
    }
    latency = mine["delivery_latency_ms"]
    assert latency["count"] == 2
    assert latency["p50"] == pytest.approx(100, rel=0.025)
    assert latency["p99"] == pytest.approx(300, rel=0.025)
    everyone = (await q.stats(None)).as_json()
    assert everyone["total"] == 8
    assert everyone["by_priority"]["high"] == 3
    assert everyone["delivery_latency_ms"]["p50"] == pytest.approx(200, rel=0.025)


async def test_applying_again_changes_nothing(engine: AsyncEngine) -> None:
    log, _ = known_sequence()
    await apply_all(engine, log.envelopes, batch=500)
    before = await checksum(engine)
    await apply_all(engine, log.envelopes, batch=500)  # the same batch again
    await apply_all(engine, log.envelopes, batch=3)  # again, cut differently
    async with engine.begin() as conn:
        await conn.execute(delete(ProjectorOffset))  # offsets reset: a replay from scratch
    await apply_all(engine, log.envelopes, batch=7)
    assert await checksum(engine) == before


async def test_a_batch_of_applied_and_new_events_applies_the_new_ones_once(engine: AsyncEngine) -> None:
    """The ledger refuses the batch's copy (some events applied before): the new ones still
    go in, exactly once, and the transaction goes on (Postgres: rolled back to a savepoint)."""
    log, _ = known_sequence()
    await apply_all(engine, log.envelopes, batch=500)
    whole = await checksum(engine)
    async with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name in READ_MODELS:
                await conn.execute(table.delete())
    half = len(log.envelopes) // 2
    await apply_all(engine, log.envelopes[:half], batch=500)  # the first half applied before
    async with engine.begin() as conn:
        assert await apply_batch(conn, 0, list(enumerate(log.envelopes))) == len(log.envelopes) - half
    assert await checksum(engine) == whole


async def test_batch_size_does_not_change_the_result(engine: AsyncEngine, tmp_path: Path) -> None:
    log, _ = known_sequence()
    await apply_all(engine, log.envelopes, batch=1)
    one_by_one = await checksum(engine)
    other = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
    try:
        await migrate(other)
        await apply_all(other, log.envelopes, batch=500)
        assert await checksum(other) == one_by_one
    finally:
        await other.dispose()


async def test_a_nul_character_from_a_producer_does_not_stop_the_projector(engine: AsyncEngine) -> None:
    from aiokafka.structs import ConsumerRecord

    from engine.settings import Settings
    from projections.projector import Projector
    from schemas.codec import encode

    log = Log(seed="nul")
    nid = log.accepted("alice", title="before\x00after")
    after_it = log.accepted("alice", title="next")
    records = [
        ConsumerRecord("herald.events", 0, offset, 0, 0, b"alice", encode(env), None, 5, 100, ())
        for offset, env in enumerate(log.envelopes)
    ]
    await Projector(Settings(), engine).apply_records(0, records)
    q = NotificationQueries(engine)
    assert (await q.get("alice", nid) or {})["title"] == "before\ufffdafter"
    assert (await q.get("alice", after_it) or {})["title"] == "next"
