"""The ``notifications`` read model: how each event changes it (idempotent by construction)."""

from __future__ import annotations

from functools import singledispatch

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from projections.models import NotificationRow
from schemas.envelope import Envelope
from schemas.events import DeliveryDeferred, DeliverySucceeded, Event, NotificationAccepted


@singledispatch
async def apply(event: Event, env: Envelope, conn: AsyncConnection) -> None:
    """Apply one event; types this model does not care about change nothing."""


@apply.register
async def _accepted(event: NotificationAccepted, env: Envelope, conn: AsyncConnection) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(NotificationRow).values(
        id=event.notification_id,
        user_id=event.user_id,
        title=event.title,
        body=event.body,
        priority=event.priority,
        channels=list(event.channels),
        category=event.category,
        data=event.data,
        status="pending",
        created_at=event.requested_at,
        expires_at=event.expires_at,
    )
    await conn.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))


@apply.register
async def _succeeded(event: DeliverySucceeded, env: Envelope, conn: AsyncConnection) -> None:
    await conn.execute(
        update(NotificationRow)
        .where(NotificationRow.id == event.notification_id, NotificationRow.delivered_at.is_(None))
        .values(status="delivered", delivered_at=env.time)
    )


@apply.register
async def _deferred(event: DeliveryDeferred, env: Envelope, conn: AsyncConnection) -> None:
    # Still pending: the missed-notification replay picks it up on reconnect.
    return None
