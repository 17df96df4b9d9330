"""Routing: what happens to an accepted notification, now or later.

Ingest routes each notification the moment it accepts it (``route_accepted``), in the
same pass over the request, so no second hop re-reads the log to do it: the plan comes
from ``engine.routing.plan_route`` (expiry, ``deliver_after``, the recipient's contact
preferences, email fallback); WebSocket
frames go to the batched live dispatch (after the acceptance is on the log), email and
APNs work to their sink topics as the acceptance's own bytes, and delayed work to the
scheduler's topic. The contact preferences come from the worker's fold of
``contact.updated`` (``streams.device_registry``, the ``herald-contacts`` table,
co-partitioned with the request topics), so a producer's request needs no lookup of its own.

No agent re-reads the event log: the cancels that a ``notification.read`` or
``notification.deleted`` implies are sent to the scheduler by the API, which appends
those facts (``api.publisher``), so the worker never consumes the log just to find them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from engine.notification import accepted_event
from engine.routing import ContactPreferences, plan_route
from engine.settings import Settings
from schemas.envelope import Envelope
from schemas.events import NotificationExpired
from streams.delivery_work import hand_off_raw
from streams.live_dispatch import Live, LiveDispatch
from streams.metrics import NOTIFICATIONS_EXPIRED
from streams.publish import append
from streams.scheduler import send_schedule
from streams.topics import Topics
from streams.websocket_frames import live_message

log = logging.getLogger(__name__)

Contacts = Callable[[str], ContactPreferences | None]
"""User id -> the user's contact preferences, if any."""


def no_contacts(user_id: str) -> ContactPreferences | None:
    """``Contacts`` of a worker that knows no contact (every user gets the defaults)."""
    return None


async def route_accepted(
    topics: Topics,
    settings: Settings,
    live: LiveDispatch,
    env: Envelope,
    raw: bytes,
    appended: Awaitable[Any],
    contacts: Contacts = no_contacts,
) -> None:
    """Carry out the routing plan of ``env`` (a ``notification.accepted`` whose encoding is ``raw``).

    ``appended`` is the broker's acknowledgement of ``env`` on the log: live frames wait
    for it, so a gateway's receipt never precedes the acceptance in the log.
    """
    plan = plan_route(
        env,
        now=datetime.now(UTC),
        fallback_seconds=settings.email_fallback_seconds,
        contact=contacts(env.userid or ""),
    )
    if plan.events:  # most plans have none (no deferral, expiry or cancellation)
        await append(topics.events, plan.events)
    accepted = accepted_event(env)
    for channel in plan.now:
        if channel == "websocket":
            message = live_message(accepted, env.correlationid)  # the gateway's receipt keeps it
            urgent = accepted.priority == "high"
            await live.submit(Live(accepted.user_id, message, env, after=(appended,), urgent=urgent))
        else:
            await hand_off_raw(topics, channel, accepted.user_id, raw)
    for item in plan.later:
        await send_schedule(topics, item)
    for decided in plan.events:
        if isinstance(decided.data, NotificationExpired):
            NOTIFICATIONS_EXPIRED.labels("all").inc()
            log.info("expired before routing", extra={"notification_id": decided.subject, "user_id": decided.userid})
