"""WebSocket frames as the sinks send them: rendered once, forwarded as bytes.

The frame's shape comes from ``engine.websocket_frames``, which the gateway uses too;
this module adds the worker's side: the bytes (orjson, once per notification) and the
pub/sub message that carries them to the gateways.
"""

from __future__ import annotations

import orjson

from engine import websocket_frames
from schemas.events import NotificationAccepted
from streams.websocket_dispatch import render_message


def notification_frame(accepted: NotificationAccepted, correlation_id: str | None = None) -> bytes:
    """``{"type":"notification","notification":{...}}`` for a live delivery (``bulk_id``: ``correlation_id``)."""
    return orjson.dumps(websocket_frames.notification(accepted, correlation_id))


def live_message(accepted: NotificationAccepted, correlation_id: str | None = None) -> bytes:
    """The pub/sub message carrying ``accepted``'s live frame to the gateways of its user.

    ``correlation_id``: the acceptance's CloudEvents ``correlationid``; the gateway's
    delivery receipt carries it on (``engine.delivery.websocket_delivered``).
    """
    return render_message(accepted.user_id, notification_frame(accepted, correlation_id))
