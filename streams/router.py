"""Router: turns each ``notification.accepted`` in the event log into deliveries, now or later.

The plan comes from ``engine.routing.plan_route`` (expiry, ``deliver_after``, email
fallback). Work due later goes to the scheduler's topic; a ``notification.read`` or
``notification.deleted`` sends it a cancel for the notification's pending work.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import faust

from engine.priority import Priority
from engine.routing import plan_route
from engine.settings import Settings
from schemas.codec import decode
from schemas.envelope import Envelope
from schemas.errors import InvalidMessage
from schemas.events import NotificationAccepted, NotificationDeleted, NotificationExpired, NotificationRead
from streams.delivery_work import hand_off
from streams.ingest import dead_letter, header_items
from streams.metrics import NOTIFICATIONS_EXPIRED
from streams.priority_gate import PriorityGate
from streams.publish import append
from streams.scheduler import send_cancel, send_schedule
from streams.topics import Topics

log = logging.getLogger(__name__)


def install(app: faust.App, topics: Topics, settings: Settings, gate: PriorityGate | None = None) -> None:
    """Register the router agent on the event log.

    With a ``gate``, routing a medium or low notification waits while higher-priority
    requests are queued at ingest, so a low backlog flowing through the log does not
    slow high-priority ingest down; high notifications are routed at once.
    """

    async def router(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            try:
                env = decode(message.value, header_items(message.headers))
            except InvalidMessage as exc:
                # Only Herald writes the log, so this is a bug or a foreign writer: keep it visible.
                await dead_letter(topics, message, exc.reason)
                continue
            if isinstance(env.data, NotificationAccepted):
                if gate is not None:
                    await gate.wait_turn(Priority(env.data.priority))
                await _route(topics, settings, env)
            elif isinstance(env.data, NotificationRead | NotificationDeleted):
                reason = "read" if isinstance(env.data, NotificationRead) else "deleted"
                await send_cancel(topics, env, reason)

    app.agent(topics.events, name="herald.router")(router)


async def _route(topics: Topics, settings: Settings, env: Envelope) -> None:
    plan = plan_route(env, now=datetime.now(UTC), fallback_seconds=settings.email_fallback_seconds)
    await append(topics.events, plan.events)
    for channel in plan.now:
        await hand_off(topics, channel, env)
    for item in plan.later:
        await send_schedule(topics, item)
    for decided in plan.events:
        if isinstance(decided.data, NotificationExpired):
            NOTIFICATIONS_EXPIRED.labels("all").inc()
            log.info("expired before routing", extra={"notification_id": decided.subject, "user_id": decided.userid})
