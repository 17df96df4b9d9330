"""Read side for the API: a user's notifications, newest first, with cursor pagination."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.models import NotificationRow
from schemas.codec import format_time


@dataclass(frozen=True, slots=True)
class Page:
    """One page of results and the cursor of the next page (``None`` at the end)."""

    items: list[dict[str, Any]]
    next_cursor: int | None


def view(row: NotificationRow) -> dict[str, Any]:
    """The client-facing JSON of a notification row (same keys as the live frame)."""
    return {
        "id": row.id,
        "user_id": row.user_id,
        "title": row.title,
        "body": row.body,
        "priority": row.priority,
        "channels": list(row.channels),
        "category": row.category,
        "data": row.data,
        "status": row.status,
        "created_at": format_time(row.created_at),
        "delivered_at": format_time(row.delivered_at) if row.delivered_at else None,
        "read_at": format_time(row.read_at) if row.read_at else None,
    }


class NotificationQueries:
    """Queries scoped to one user: nobody reads another user's rows through this class."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def list(self, user_id: str, *, limit: int = 50, before: int | None = None) -> Page:
        """Newest first; ``before`` is the cursor returned with the previous page."""
        stmt = select(NotificationRow).where(NotificationRow.user_id == user_id)
        if before is not None:
            stmt = stmt.where(NotificationRow.seq < before)
        stmt = stmt.order_by(NotificationRow.seq.desc()).limit(limit + 1)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        items = [view(row) for row in rows[:limit]]  # type: ignore[arg-type]
        next_cursor = rows[limit - 1].seq if len(rows) > limit else None
        return Page(items=items, next_cursor=next_cursor)

    async def get(self, user_id: str, notification_id: str) -> dict[str, Any] | None:
        """The notification if it exists *and* belongs to ``user_id``; else ``None``."""
        stmt = select(NotificationRow).where(NotificationRow.id == notification_id, NotificationRow.user_id == user_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return view(row) if row is not None else None  # type: ignore[arg-type]

    async def ping(self) -> None:
        """Raise if the database is unreachable."""
        async with self._engine.connect() as conn:
            await conn.execute(select(1))
