"""The ``deliveries`` read model: one row per delivery event, keyed by the event id."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from projections.models import DeliveryRow
from projections.sql import insert_rows
from schemas.envelope import Envelope
from schemas.events import (
    DeliveryAbandoned,
    DeliveryCancelled,
    DeliveryDeferred,
    DeliveryFailed,
    DeliveryRetryScheduled,
    DeliverySucceeded,
    NotificationExpired,
)

_OUTCOMES: dict[type, str] = {
    DeliverySucceeded: "succeeded",
    DeliveryFailed: "failed",
    DeliveryRetryScheduled: "retry_scheduled",
    DeliveryDeferred: "deferred",
    DeliveryAbandoned: "abandoned",
    DeliveryCancelled: "cancelled",
    NotificationExpired: "expired",
}


def delivery_row(env: Envelope) -> dict[str, Any] | None:
    """The ``deliveries`` row of a delivery event; ``None`` for other events."""
    event = env.data
    outcome = _OUTCOMES.get(type(event))
    if outcome is None:
        return None
    channel = getattr(event, "channel", None)
    if isinstance(event, NotificationExpired) and channel is None:
        channel = "all"
    attempt = getattr(event, "attempt", None)
    if isinstance(event, DeliveryAbandoned):
        attempt = event.attempts
    return {
        "event_id": env.id,
        "notification_id": getattr(event, "notification_id", ""),
        "user_id": getattr(event, "user_id", ""),
        "channel": channel,
        "outcome": outcome,
        "target": getattr(event, "target", None),
        "attempt": attempt,
        "provider_id": getattr(event, "provider_id", None),
        "error": getattr(event, "error", None) or getattr(event, "reason", None),
        "retriable": getattr(event, "retriable", None),
        "latency_ms": getattr(event, "latency_ms", None),
        "at": env.time,
    }


async def insert(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Insert delivery rows in one statement; rows already present are left alone."""
    await insert_rows(conn, DeliveryRow, rows, lambda stmt: stmt.on_conflict_do_nothing(index_elements=["event_id"]))
