"""Decisions of the delivery path: routing an accepted notification, and a live delivery's outcome."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.notification import accepted_event, follow
from schemas.codec import format_time
from schemas.envelope import Envelope
from schemas.events import DeliveryDeferred, DeliverySucceeded, Event, NotificationAccepted, NotificationRead
from schemas.ids import derived_id

SINK_SOURCE = "herald/sink"


def route(accepted: NotificationAccepted) -> tuple[str, ...]:
    """Channels the notification is handed to now (one delivery record per channel)."""
    return accepted.channels


def websocket_outcome(cause: Envelope, reached: list[str], *, now: datetime) -> Envelope:
    """``delivery.succeeded`` if any gateway took the frame, else ``delivery.deferred`` (offline)."""
    accepted = accepted_event(cause)
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


def notification_view(
    accepted: NotificationAccepted, *, status: str = "pending", correlation_id: str | None = None
) -> dict[str, Any]:
    """The client-facing JSON of a notification, as a live WebSocket frame carries it.

    Same keys as an item of ``GET /api/notifications``; ``bulk_id`` is the acceptance's
    CloudEvents ``correlationid``, as in the read model, so the gateway's receipts keep it.
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
        "bulk_id": correlation_id,
    }


GATEWAY_SOURCE = "herald/gateway"


def websocket_delivered(
    notification: dict[str, Any], *, node: str, connection: str, via: str, created_at: datetime, now: datetime
) -> Envelope:
    """``delivery.succeeded``: the gateway wrote ``notification`` (its client view) to one socket.

    One event per connection that got the frame; the id is derived from notification,
    node and connection, so recording the same write twice yields the same event.
    ``via`` is ``live`` or ``replay`` (kept in ``provider_id`` for the audit trail).
    """
    event = DeliverySucceeded(
        notification_id=notification["id"],
        user_id=notification["user_id"],
        channel="websocket",
        target=f"{node}/{connection}",
        latency_ms=round(max(0.0, (now - created_at).total_seconds() * 1000), 3),
        provider_id=via,
    )
    return _gateway_fact(event, notification, now, node, connection)


def websocket_dropped(notification: dict[str, Any], *, node: str, now: datetime) -> Envelope:
    """``delivery.deferred``: a frame reached a gateway whose sockets for the user had just closed.

    The notification stays undelivered on the WebSocket channel, so the next connection replays it.
    """
    event = DeliveryDeferred(
        notification_id=notification["id"],
        user_id=notification["user_id"],
        channel="websocket",
        reason="disconnected",
    )
    return _gateway_fact(event, notification, now, node)


def read_over_websocket(notification_id: str, user_id: str, *, now: datetime) -> Envelope:
    """``notification.read`` sent by a client over its socket (one id per notification: reading twice is one fact)."""
    event = NotificationRead(notification_id=notification_id, user_id=user_id, via="websocket")
    return Envelope(
        id=derived_id(notification_id, event.TYPE),
        source=GATEWAY_SOURCE,
        time=now,
        data=event,
        subject=notification_id,
        userid=user_id,
        correlationid=notification_id,
    )


def _gateway_fact(event: Event, notification: dict[str, Any], now: datetime, *parts: str) -> Envelope:
    notification_id = notification["id"]
    priority = notification.get("priority")
    correlation = notification.get("bulk_id")  # the request's correlation id (client views carry it)
    return Envelope(
        id=derived_id(notification_id, event.TYPE, "websocket", *parts),
        source=GATEWAY_SOURCE,
        time=now,
        data=event,
        subject=notification_id,
        userid=getattr(event, "user_id", None),
        priority=priority if isinstance(priority, str) else None,
        correlationid=correlation if isinstance(correlation, str) and correlation else notification_id,
    )
