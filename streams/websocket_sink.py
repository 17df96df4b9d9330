"""WebSocket sink: push notifications to the gateways holding their users, or defer them.

Live deliveries leave ingest directly (``streams.router.route_accepted``); this agent
takes the WebSocket work that comes later (``deliver_after``, via the scheduler). Both
go through the same batched ``LiveDispatch``, whose results this module records: the
sink decides only "offline" (``delivery.deferred``); a delivery is recorded by the
gateway that wrote the frame to a socket (``api/ws/receipts.py``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import faust

from engine import correlation
from engine.delivery import websocket_outcome
from engine.notification import accepted_event
from streams.dead_letters import header_items
from streams.delivery_attempt import read_work
from streams.lingering import faust_client, lingering_sender
from streams.live_dispatch import Live, LiveDispatch
from streams.metrics import DELIVERY_LATENCY, NOTIFICATIONS_DEFERRED, NOTIFICATIONS_DELIVERED
from streams.publish import append
from streams.topics import Topics
from streams.websocket_frames import live_message

log = logging.getLogger(__name__)

_DELIVERED: dict[str, tuple[Any, Any]] = {}
"""Per priority: the delivered counter's and the latency histogram's children, looked up once
(``labels()`` takes a lock on every call)."""


def live_dispatch(topics: Topics, dispatcher: Any) -> LiveDispatch:
    """The worker's batched hand-off to the gateways, recording who was offline."""

    deferred = NOTIFICATIONS_DEFERRED.labels("websocket")
    debug = functools.partial(log.isEnabledFor, logging.DEBUG)
    info = functools.partial(log.isEnabledFor, logging.INFO)

    async def recorded(batch: Sequence[Live]) -> None:
        now = datetime.now(UTC)
        for item in batch:
            env = item.cause
            accepted = env.data
            correlation.bind(env.correlationid or env.id)  # on this item's log lines (logs.py)
            if item.reached:
                # Handed off to the gateways holding the user. Each records delivery.succeeded
                # itself once the frame is on a socket (or delivery.deferred if the user just
                # left): only the gateway knows, and an unrecorded frame is replayed on reconnect.
                delivered = _DELIVERED.get(accepted.priority)
                if delivered is None:
                    delivered = _DELIVERED[accepted.priority] = (
                        NOTIFICATIONS_DELIVERED.labels("websocket", accepted.priority),
                        DELIVERY_LATENCY.labels("websocket", accepted.priority),
                    )
                delivered[0].inc()
                delivered[1].observe(max(0.0, (now - accepted.requested_at).total_seconds()))
                if debug():
                    log.debug(
                        "websocket hand-off",
                        extra={"notification_id": accepted.notification_id, "user_id": accepted.user_id},
                    )
                continue
            outcome = websocket_outcome(env, [], now=now)
            await append(topics.events, [outcome])
            deferred.inc()
            if not info():  # the line's fields are not built for nothing
                continue
            log.info(
                "websocket delivery deferred: user offline",
                extra={
                    "notification_id": accepted.notification_id,
                    "user_id": accepted.user_id,
                    "event_type": outcome.type,
                    "correlation_id": env.correlationid or env.id,
                },
            )

        correlation.bind(None)

    # Frames wait on their acceptance's append: it leaves without the producer's linger.
    return LiveDispatch(dispatcher, recorded, push=lingering_sender(faust_client(topics.events.app)))


def install(app: faust.App, topics: Topics, live: LiveDispatch) -> None:
    """Register the WebSocket sink agent (work due later, from the scheduler)."""

    async def websocket_sink(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            correlation.bind(None)
            # A work record the worker wrote itself: the delivery agents' structural read, the
            # full decode (and the dead letter with its reason) for anything off that layout.
            env = await read_work(topics, message, header_items(message.headers))
            if env is None:
                continue
            accepted = accepted_event(env)
            correlation.bind(env.correlationid or env.id)
            await live.submit(
                Live(
                    accepted.user_id, live_message(accepted, env.correlationid), env, urgent=accepted.priority == "high"
                )
            )

    app.agent(topics.deliveries["websocket"], name="herald.sink.websocket")(websocket_sink)
