"""Router: turns each ``notification.accepted`` in the event log into one delivery per channel."""

from __future__ import annotations

import logging

import faust

from engine.delivery import route
from schemas.codec import decode
from schemas.errors import InvalidMessage
from schemas.events import NotificationAccepted
from streams.ingest import dead_letter, header_items
from streams.topics import Topics

log = logging.getLogger(__name__)


def install(app: faust.App, topics: Topics) -> None:
    """Register the router agent on the event log."""

    async def router(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            try:
                env = decode(message.value, header_items(message.headers))
            except InvalidMessage as exc:
                # Only Herald writes the log, so this is a bug or a foreign writer: keep it visible.
                await dead_letter(topics, message, exc.reason)
                continue
            if not isinstance(env.data, NotificationAccepted):
                continue
            futures = [
                await topics.deliveries[channel].send(key=message.key, value=message.value)
                for channel in route(env.data)
            ]
            for fut in futures:
                await fut

    app.agent(topics.events, name="herald.router")(router)
