"""Routing: what happens to an accepted notification, now or later.

Ingest routes each notification the moment it accepts it (``route_accepted``), in the
same pass over the request, so no second hop re-reads the log to do it: the plan comes
from ``engine.routing.plan_route`` (expiry, ``deliver_after``, email fallback); WebSocket
frames go to the batched live dispatch (after the acceptance is on the log), email and
APNs work to their sink topics as the acceptance's own bytes, and delayed work to the
scheduler's topic.

The router agent on the event log only turns ``notification.read`` and
``notification.deleted`` (appended by the API and the gateways) into cancels of the
notification's pending work. It reads the ``type`` of every other event without
decoding it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import faust
import orjson

from engine.notification import accepted_event
from engine.routing import plan_route
from engine.settings import Settings
from schemas.codec import decode
from schemas.envelope import Envelope
from schemas.errors import InvalidMessage
from schemas.events import NotificationDeleted, NotificationExpired, NotificationRead
from streams.dead_letters import dead_letter, header_items
from streams.delivery_work import hand_off_raw
from streams.live_dispatch import Live, LiveDispatch
from streams.metrics import NOTIFICATIONS_EXPIRED
from streams.publish import append
from streams.scheduler import send_cancel, send_schedule
from streams.topics import Topics
from streams.websocket_frames import live_message

log = logging.getLogger(__name__)

CANCELLING_TYPES = frozenset({"notification.read", "notification.deleted"})
UNREADABLE = "?"
"""``event_type`` of a record it cannot read: the full decode then names the problem."""


async def route_accepted(
    topics: Topics,
    settings: Settings,
    live: LiveDispatch,
    env: Envelope,
    raw: bytes,
    appended: Awaitable[Any],
) -> None:
    """Carry out the routing plan of ``env`` (a ``notification.accepted`` whose encoding is ``raw``).

    ``appended`` is the broker's acknowledgement of ``env`` on the log: live frames wait
    for it, so a gateway's receipt never precedes the acceptance in the log.
    """
    plan = plan_route(env, now=datetime.now(UTC), fallback_seconds=settings.email_fallback_seconds)
    await append(topics.events, plan.events)
    accepted = accepted_event(env)
    for channel in plan.now:
        if channel == "websocket":
            message = live_message(accepted)
            await live.submit(Live(accepted.user_id, message, env, after=(appended,)))
        else:
            await hand_off_raw(topics, channel, accepted.user_id, raw)
    for item in plan.later:
        await send_schedule(topics, item)
    for decided in plan.events:
        if isinstance(decided.data, NotificationExpired):
            NOTIFICATIONS_EXPIRED.labels("all").inc()
            log.info("expired before routing", extra={"notification_id": decided.subject, "user_id": decided.userid})


def install(app: faust.App, topics: Topics, settings: Settings) -> None:
    """Register the router agent on the event log (cancels on read and delete)."""

    async def router(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            kind = event_type(message.value)
            if kind not in CANCELLING_TYPES and kind is not UNREADABLE:
                continue
            try:
                env = decode(message.value, header_items(message.headers))
            except InvalidMessage as exc:
                # Only Herald writes the log, so this is a bug or a foreign writer: keep it visible.
                await dead_letter(topics, message, exc.reason)
                continue
            if isinstance(env.data, NotificationRead | NotificationDeleted):
                reason = "read" if isinstance(env.data, NotificationRead) else "deleted"
                await send_cancel(topics, env, reason)

    app.agent(topics.events, name="herald.router")(router)


def event_type(raw: bytes | None) -> str | None:
    """The CloudEvents ``type`` of a log record, without validating the rest (``None`` if unreadable)."""
    if not raw:
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return UNREADABLE
    kind = body.get("type") if isinstance(body, dict) else None
    return kind if isinstance(kind, str) else UNREADABLE
