"""Decisions of the delivery path: routing an accepted notification, and a live delivery's outcome."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.notification import follow
from schemas.codec import format_time
from schemas.envelope import Envelope
from schemas.events import DeliveryDeferred, DeliverySucceeded, NotificationAccepted

SINK_SOURCE = "herald/sink"


def route(accepted: NotificationAccepted) -> tuple[str, ...]:
    """Channels the notification is handed to now (one delivery record per channel)."""
    return accepted.channels


def websocket_outcome(cause: Envelope, reached: list[str], *, now: datetime) -> Envelope:
    """``delivery.succeeded`` if any gateway took the frame, else ``delivery.deferred`` (offline)."""
    accepted = cause.data
    assert isinstance(accepted, NotificationAccepted)
    if reached:
        latency_ms = max(0.0, (now - accepted.requested_at).total_seconds() * 1000)
        event: DeliverySucceeded | DeliveryDeferred = DeliverySucceeded(
            notification_id=accepted.notification_id,
            user_id=accepted.user_id,
            channel="websocket",
            target=",".join(sorted(reached)),
            latency_ms=round(latency_ms, 3),
        )
    else:
        event = DeliveryDeferred(
            notification_id=accepted.notification_id,
            user_id=accepted.user_id,
            channel="websocket",
            reason="offline",
        )
    return follow(cause, event, now=now, source=SINK_SOURCE)


def notification_view(accepted: NotificationAccepted, *, status: str = "pending") -> dict[str, Any]:
    """The client-facing JSON of a notification, as a live WebSocket frame carries it.

    Same keys as an item of ``GET /api/notifications``.
    """
    return {
        "id": accepted.notification_id,
        "user_id": accepted.user_id,
        "title": accepted.title,
        "body": accepted.body,
        "priority": accepted.priority,
        "channels": list(accepted.channels),
        "category": accepted.category,
        "data": accepted.data,
        "status": status,
        "created_at": format_time(accepted.requested_at),
        "read_at": None,
    }
