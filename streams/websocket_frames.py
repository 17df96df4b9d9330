"""WebSocket frames as the sinks send them: rendered once, forwarded as bytes."""

from __future__ import annotations

import orjson

from engine.delivery import notification_view
from schemas.events import NotificationAccepted
from streams.websocket_dispatch import render_message


def notification_frame(accepted: NotificationAccepted) -> bytes:
    """``{"type":"notification","notification":{...}}`` for a live delivery."""
    return orjson.dumps({"type": "notification", "notification": notification_view(accepted, status="delivered")})


def live_message(accepted: NotificationAccepted) -> bytes:
    """The pub/sub message carrying ``accepted``'s live frame to the gateways of its user."""
    return render_message(accepted.user_id, notification_frame(accepted))
