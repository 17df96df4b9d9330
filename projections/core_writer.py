"""The projector's writes through SQLAlchemy Core: SQLite (``herald dev``) and any other backend.

The same operations as ``projections.postgres_writer``, built from the typed models with
portable upserts; simpler and slower, which a development database can afford.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from projections import deliveries, stats
from projections.models import ChannelStateRow, EventRow, NotificationRow, ProjectorOffset
from projections.notifications import MUTABLE_FIELDS, ChannelState, NotificationState, States
from projections.sql import among, insert_for, insert_rows

STATE_FIELDS = ("id", "user_id", "status", "created_at", "priority", *MUTABLE_FIELDS[1:])
"""Notification columns the fold reads (never the content)."""
CHANNEL_FIELDS = (
    "state",
    "attempts",
    "target",
    "provider_id",
    "error",
    "delivered_at",
    "next_attempt_at",
    "updated_at",
)
"""Channel row columns, in ``ChannelState`` order."""


class CoreWriter:
    """The batch writes of ``projections.batch`` for one transaction, via SQLAlchemy Core."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def flush(self) -> None:
        """Nothing to do: every write was executed when it was asked for."""
        return None

    async def claim_offset(self, topic: str, partition: int) -> int:
        """The partition's stored next offset (SQLite: one writer at a time anyway)."""
        stmt = select(ProjectorOffset.next_offset).where(
            ProjectorOffset.topic == topic, ProjectorOffset.partition == partition
        )
        if self._conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        value = (await self._conn.execute(stmt)).scalar_one_or_none()
        return int(value) if value is not None else 0

    async def store_offset(self, topic: str, partition: int, next_offset: int) -> None:
        """Move the partition's checkpoint."""
        stmt = insert_for(self._conn, ProjectorOffset).values(topic=topic, partition=partition, next_offset=next_offset)
        await self._conn.execute(
            stmt.on_conflict_do_update(index_elements=["topic", "partition"], set_={"next_offset": next_offset})
        )

    async def claim_events(self, ledger: Sequence[dict[str, Any]]) -> set[str]:
        """Write the ledger rows not there yet; return their ids."""
        ids = [row["event_id"] for row in ledger]
        known: set[str] = set()
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            stmt = select(EventRow.event_id).where(among(self._conn, EventRow.event_id, chunk))
            known.update(str(i) for i in (await self._conn.execute(stmt)).scalars())
        rows = [{k: v for k, v in row.items() if k != "data_json"} for row in ledger if row["event_id"] not in known]
        await insert_rows(
            self._conn, EventRow, rows, lambda stmt: stmt.on_conflict_do_nothing(index_elements=["event_id"])
        )
        return {row["event_id"] for row in rows}

    async def load(self, ids: Sequence[str]) -> States:
        """Snapshots of the notifications ``ids`` that exist."""
        states: States = {}
        id_list = sorted(ids)
        columns = [getattr(NotificationRow, k) for k in STATE_FIELDS]
        for start in range(0, len(id_list), 1000):
            chunk = id_list[start : start + 1000]
            stmt = select(*columns).where(among(self._conn, NotificationRow.id, chunk))
            for row in (await self._conn.execute(stmt)).all():
                r = row._mapping
                states[r["id"]] = NotificationState(**{k: r[k] for k in STATE_FIELDS})
            stmt = select(ChannelStateRow).where(among(self._conn, ChannelStateRow.notification_id, chunk))
            for channel_row in (await self._conn.execute(stmt)).all():
                r = channel_row._mapping
                state = states.get(r["notification_id"])
                if state is not None:
                    state.channel_states[r["channel"]] = ChannelState(**{k: r[k] for k in CHANNEL_FIELDS})
        return states

    async def insert_notifications(self, rows: Sequence[dict[str, Any]]) -> None:
        """New notification rows."""
        await insert_rows(
            self._conn, NotificationRow, rows, lambda stmt: stmt.on_conflict_do_nothing(index_elements=["id"])
        )

    async def update_notifications(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """``(id, *MUTABLE_FIELDS)`` of changed notifications."""
        if not rows:
            return
        stmt = (
            update(NotificationRow)
            .where(NotificationRow.id == bindparam("b_id"))
            .values({k: bindparam(f"b_{k}") for k in MUTABLE_FIELDS})
        )
        names = ("b_id", *(f"b_{k}" for k in MUTABLE_FIELDS))
        await self._conn.execute(stmt, [dict(zip(names, row, strict=True)) for row in rows])

    async def insert_channels(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Channel rows of new notifications (an upsert here too)."""
        await self.upsert_channels(rows)

    async def upsert_channels(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """``(notification_id, channel, *CHANNEL_FIELDS)`` rows."""
        names = ("notification_id", "channel", *CHANNEL_FIELDS)
        await insert_rows(
            self._conn,
            ChannelStateRow,
            [dict(zip(names, row, strict=True)) for row in rows],
            lambda stmt: stmt.on_conflict_do_update(
                index_elements=["notification_id", "channel"],
                set_={k: getattr(stmt.excluded, k) for k in CHANNEL_FIELDS},
            ),
        )

    async def insert_deliveries(self, rows: Sequence[dict[str, Any]]) -> None:
        """Delivery rows; rows already present are left alone."""
        await deliveries.insert(self._conn, list(rows))

    async def add_stats(self, deltas: Sequence[tuple[str, str, str, int]]) -> None:
        """Add ``(scope, metric, key, delta)`` to the counters."""
        await stats.add(self._conn, Counter({(s, m, k): n for s, m, k, n in deltas}))

    async def insert_stats(self, counters: Sequence[tuple[str, str, str, int]]) -> None:
        """``(scope, metric, key, count)`` of counters not there yet (here: added like deltas)."""
        await self.add_stats(counters)

    async def add_user_stats(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Add ``(user id, *deltas)`` rows to ``user_stats``."""
        await stats.add_users(self._conn, list(rows))

    async def insert_user_stats(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """``(user id, *counts)`` rows of users not there yet (here: added like deltas)."""
        await self.add_user_stats(rows)
