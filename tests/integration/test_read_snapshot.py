"""A page and a notification's detail are several reads (the rows, then their channel states,
then the deliveries): on Postgres they must see one snapshot, never half of a projector batch
committed between two of them (READ COMMITTED gives each statement its own)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import insert, update

from projections.database import create_engine, migrate
from projections.models import ChannelStateRow, DeliveryRow, NotificationRow
from projections.queries import NotificationQueries
from tests.support.api import own_database

USER = "snap-reader"
NID = "snap-n1"
STATES = ("retrying", "delivered")


async def _seed(url: str) -> None:
    engine = create_engine(url)
    now = datetime.now(UTC)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(NotificationRow).values(
                    id=NID,
                    user_id=USER,
                    title="t",
                    body="b",
                    priority="high",
                    channels=["websocket"],
                    channel_mask=1,
                    category="c",
                    data={},
                    status=STATES[0],
                    attempts=0,
                    created_at=now,
                )
            )
            await conn.execute(
                insert(ChannelStateRow).values(
                    notification_id=NID, channel="websocket", state=STATES[0], attempts=0, updated_at=now
                )
            )
    finally:
        await engine.dispose()


async def _commit_attempts(url: str, commits: int, done: asyncio.Event) -> None:
    """``commits`` transactions, each one attempt: a delivery row, the notification's status and
    attempts, and its channel state moved together, as one projector batch moves them."""
    engine = create_engine(url)
    try:
        for i in range(1, commits + 1):
            state = STATES[i % 2]
            now = datetime.now(UTC)
            async with engine.begin() as conn:
                await conn.execute(
                    update(NotificationRow).where(NotificationRow.id == NID).values(status=state, attempts=i)
                )
                await conn.execute(
                    update(ChannelStateRow)
                    .where(ChannelStateRow.notification_id == NID)
                    .values(state=state, attempts=i, updated_at=now)
                )
                await conn.execute(
                    insert(DeliveryRow).values(
                        event_id=f"e{i}",
                        notification_id=NID,
                        user_id=USER,
                        channel="websocket",
                        outcome="succeeded" if state == "delivered" else "deferred",
                        attempt=i,
                        at=now,
                    )
                )
            await asyncio.sleep(0)
    finally:
        done.set()
        await engine.dispose()


async def test_a_page_and_a_detail_never_show_half_of_a_batch() -> None:
    with own_database("herald_read_snapshot") as url:
        engine = create_engine(url)
        try:
            await migrate(engine)
            await _seed(url)
            queries = NotificationQueries(engine)
            done = asyncio.Event()
            writer = asyncio.create_task(_commit_attempts(url, 400, done))
            reads = torn = 0
            while not done.is_set():
                (item,) = (await queries.page(USER)).items
                detail = await queries.get(USER, NID, deliveries=True)
                assert detail is not None
                reads += 1
                if item["status"] != item["channel_states"]["websocket"]:
                    torn += 1
                if detail["status"] != detail["channel_states"]["websocket"]:
                    torn += 1
                if len(detail["deliveries"]) != detail["attempts"]:
                    torn += 1
            await writer
            final = await queries.get(USER, NID, deliveries=True)
        finally:
            await engine.dispose()
    assert final is not None and final["attempts"] == 400 and len(final["deliveries"]) == 400
    assert reads > 50, "the reads did not overlap the commits"
    assert torn == 0, f"{torn} torn answers in {reads} reads"
