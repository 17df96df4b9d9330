"""WebSocket sink: push the notification to the gateways holding the user, or defer it.

The sink decides only "offline" (``delivery.deferred``); a delivery is recorded by the
gateway that wrote the frame to a socket (``api/receipts.py``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import faust

from engine.delivery import notification_view, websocket_outcome
from schemas.codec import decode
from schemas.errors import InvalidMessage
from schemas.events import NotificationAccepted
from streams.ingest import dead_letter, header_items
from streams.metrics import DELIVERY_LATENCY, NOTIFICATIONS_DEFERRED, NOTIFICATIONS_DELIVERED
from streams.publish import append
from streams.topics import Topics
from streams.websocket_dispatch import Dispatcher

log = logging.getLogger(__name__)


def install(app: faust.App, topics: Topics, dispatcher: Dispatcher) -> None:
    """Register the WebSocket sink agent."""

    async def websocket_sink(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            try:
                env = decode(message.value, header_items(message.headers))
            except InvalidMessage as exc:
                await dead_letter(topics, message, exc.reason)
                continue
            accepted = env.data
            if not isinstance(accepted, NotificationAccepted):
                await dead_letter(topics, message, f"expected notification.accepted, got {env.type}")
                continue
            frame = {"type": "notification", "notification": notification_view(accepted, status="delivered")}
            reached = await dispatcher.dispatch(accepted.user_id, frame)
            now = datetime.now(UTC)
            if reached:
                # Handed off to the gateways holding the user. Each records delivery.succeeded
                # itself once the frame is on a socket (or delivery.deferred if the user just
                # left): only the gateway knows, and an unrecorded frame is replayed on reconnect.
                NOTIFICATIONS_DELIVERED.labels("websocket", accepted.priority).inc()
                DELIVERY_LATENCY.labels("websocket", accepted.priority).observe(
                    max(0.0, (now - accepted.requested_at).total_seconds())
                )
                event_type = "websocket.handed_off"
            else:
                outcome = websocket_outcome(env, reached, now=now)
                await append(topics.events, [outcome])
                NOTIFICATIONS_DEFERRED.labels("websocket").inc()
                event_type = outcome.type
            log.info(
                "websocket delivery",
                extra={
                    "notification_id": accepted.notification_id,
                    "user_id": accepted.user_id,
                    "event_type": event_type,
                    "correlation_id": env.correlationid or env.id,
                    "nodes": reached,
                },
            )

    app.agent(topics.deliveries["websocket"], name="herald.sink.websocket")(websocket_sink)
