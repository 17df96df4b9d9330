"""What a reconnecting WebSocket client missed, read from the projections.

"Undelivered" is the WebSocket channel's own state in ``notification_channels``
(pending, deferred or retrying), so an email delivered meanwhile does not hide a
notification from the live channel. Read, deleted, expired, refused and not-yet-due
notifications are never replayed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.models import ChannelStateRow, NotificationRow, ProjectorOffset
from projections.queries import view as row_view

OPEN_STATES = ("pending", "deferred", "retrying")
"""WebSocket channel states that still owe the user a delivery."""
CLOSED_STATUSES = ("expired", "cancelled", "rejected", "rate_limited", "duplicate")
"""Notification statuses that are never replayed, whatever the cursor."""


@dataclass(frozen=True, slots=True)
class MissedPage:
    """One batch of a replay, oldest first, and where the next batch starts."""

    items: list[dict[str, Any]]
    next_after: int | None
    """``seq`` to pass as ``after`` for the next batch; ``None`` when this was the last."""


class Inbox:
    """Replay queries, always scoped to one user."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def missed(
        self, user_id: str, *, after: int | None, since_mode: bool, limit: int, now: datetime
    ) -> MissedPage:
        """The next ``limit`` notifications to replay, in arrival order.

        Without a client cursor (``since_mode`` false) these are the WebSocket-undelivered
        ones; with one, every live notification after the cursor's ``seq`` (the client
        knows what it saw, the server may have recorded a delivery the client never got).
        """
        stmt = self._replayable(user_id, now)
        if not since_mode:
            stmt = stmt.join(
                ChannelStateRow,
                and_(ChannelStateRow.notification_id == NotificationRow.id, ChannelStateRow.channel == "websocket"),
            ).where(ChannelStateRow.state.in_(OPEN_STATES), NotificationRow.read_at.is_(None))
        if after is not None:
            stmt = stmt.where(NotificationRow.seq > after)
        stmt = stmt.order_by(NotificationRow.seq).limit(limit + 1)
        async with self._engine.connect() as conn:
            # Core rows (not ORM instances): attribute access by column name.
            rows = (await conn.execute(stmt)).all()
        page = list(rows[:limit])
        items = [view(row) for row in page if "websocket" in row.channels]
        return MissedPage(items=items, next_after=page[-1].seq if len(rows) > limit else None)

    async def seq_of(self, user_id: str, notification_id: str) -> int | None:
        """Arrival position of the user's notification ``notification_id`` (``None`` if not theirs or unknown)."""
        stmt = select(NotificationRow.seq).where(
            NotificationRow.id == notification_id, NotificationRow.user_id == user_id
        )
        async with self._engine.connect() as conn:
            value = (await conn.execute(stmt)).scalar_one_or_none()
        return int(value) if value is not None else None

    async def read_state(self, user_id: str, notification_id: str) -> tuple[bool, datetime | None]:
        """Whether the user has notification ``notification_id``, and when it was read (``None``: unread)."""
        stmt = select(NotificationRow.read_at).where(
            NotificationRow.id == notification_id, NotificationRow.user_id == user_id
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return (False, None) if row is None else (True, row.read_at)

    async def projected_offset(self, topic: str, partition: int) -> int:
        """Next event-log offset the projector will apply on ``partition`` (0 before it starts)."""
        stmt = select(ProjectorOffset.next_offset).where(
            ProjectorOffset.topic == topic, ProjectorOffset.partition == partition
        )
        async with self._engine.connect() as conn:
            value = (await conn.execute(stmt)).scalar_one_or_none()
        return int(value) if value is not None else 0

    @staticmethod
    def _replayable(user_id: str, now: datetime) -> Select[Any]:
        return select(NotificationRow).where(
            NotificationRow.user_id == user_id,
            NotificationRow.deleted_at.is_(None),
            NotificationRow.status.not_in(CLOSED_STATUSES),
            or_(NotificationRow.expires_at.is_(None), NotificationRow.expires_at > now),
            or_(NotificationRow.deliver_after.is_(None), NotificationRow.deliver_after <= now),
        )


_FRAME_KEYS = (
    "id",
    "user_id",
    "title",
    "body",
    "priority",
    "channels",
    "category",
    "data",
    "status",
    "created_at",
    "delivered_at",
    "read_at",
)


def view(row: Any) -> dict[str, Any]:
    """The client JSON of a replayed notification: the keys of a live frame, plus ``delivered_at``.

    Built from the REST view of the row, so the two never drift; a replayed notification
    is delivered by the replay itself, hence ``pending`` reads ``delivered``.
    """
    full = row_view(row)
    item = {key: full[key] for key in _FRAME_KEYS}
    if row.status == "pending":
        item["status"] = "delivered"
    return item
