"""The WebSocket protocol's server frames (docs/websocket.md), shaped in one place.

Two processes write them: the worker renders a notification's live frame once
(``streams.websocket_frames``, sent to the gateways through Redis), and the gateway
(``api.ws.gateway``, ``api.ws.connection``) writes replay batches, pongs, read confirmations
and errors and forwards the live frames. Both build them here, so the sink and the
gateway cannot drift apart on a frame's type names or keys. Pure: dicts and text only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from engine.delivery import notification_view
from schemas.events import NotificationAccepted

NOTIFICATION = "notification"
"""A live notification: ``{"type":"notification","notification":{...}}``."""

MISSED_NOTIFICATIONS = "missed_notifications"
"""A replay batch: ``{"type":"missed_notifications","notifications":[...],"more":bool}``."""


def notification(accepted: NotificationAccepted, correlation_id: str | None = None) -> dict[str, Any]:
    """The live frame of ``accepted`` (``bulk_id``: ``correlation_id``), as delivered."""
    view = notification_view(accepted, status="delivered", correlation_id=correlation_id)
    return {"type": NOTIFICATION, "notification": view}


def notification_of(frame: Mapping[str, Any]) -> dict[str, Any] | None:
    """The notification a live frame carries; ``None`` for any other frame."""
    if frame.get("type") != NOTIFICATION:
        return None
    carried = frame.get("notification")
    return carried if isinstance(carried, dict) else None


def missed_notifications(notifications: list[dict[str, Any]], *, more: bool) -> dict[str, Any]:
    """One replay batch; the last one (``more`` false) ends the replay, even when empty."""
    return {"type": MISSED_NOTIFICATIONS, "notifications": notifications, "more": more}


def pong() -> dict[str, Any]:
    """The answer to a client ``ping``."""
    return {"type": "pong"}


def read(notification_id: str, read_at: str) -> dict[str, Any]:
    """A ``read`` was recorded (or had been, at ``read_at``)."""
    return {"type": "read", "id": notification_id, "read_at": read_at}


def error(message: str, **fields: Any) -> dict[str, Any]:
    """A client frame could not be handled; ``fields`` add context (``id``, ``retry_after``)."""
    return {"type": "error", "error": message, **fields}


def render(frame: Mapping[str, Any]) -> str:
    """A frame as the text sent on the socket: compact JSON, non-ASCII escaped."""
    return json.dumps(frame, separators=(",", ":"))
