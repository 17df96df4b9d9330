"""Ingest: one agent per priority topic; decode, decide, append the outcome to the event log."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import faust

from engine.notification import decide_request, decide_unreadable
from engine.priority import Priority
from engine.settings import Settings
from schemas.codec import decode
from schemas.envelope import Envelope
from schemas.errors import InvalidMessage
from streams.metrics import DEAD_LETTERED, NOTIFICATIONS_CREATED, NOTIFICATIONS_REJECTED
from streams.publish import append
from streams.topics import Topics

log = logging.getLogger(__name__)


def header_items(headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None) -> list[tuple[str, bytes]]:
    """Kafka headers as a list of pairs, whatever shape the client handed us."""
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


async def dead_letter(topics: Topics, message: faust.types.Message, reason: str) -> None:
    """Copy the raw record to the dead-letter topic with why and where it came from."""
    headers = [
        *header_items(message.headers),
        ("herald-error", reason.encode()[:4000]),
        ("herald-source-topic", message.topic.encode()),
        ("herald-source-partition", str(message.partition).encode()),
        ("herald-source-offset", str(message.offset).encode()),
    ]
    fut = await topics.deadletter.send(key=message.key, value=message.value, headers=headers)
    await fut
    DEAD_LETTERED.labels(message.topic).inc()
    log.warning(
        "dead-lettered record",
        extra={"error": reason, "topic": message.topic, "partition": message.partition, "offset": message.offset},
    )


def install(app: faust.App, topics: Topics, settings: Settings) -> None:
    """Register one ingest agent per priority."""
    for priority in Priority:
        _install_one(app, topics, settings, priority)


def _install_one(app: faust.App, topics: Topics, settings: Settings, priority: Priority) -> None:
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            try:
                request = decode(message.value, header_items(message.headers), max_bytes=settings.max_request_bytes)
            except InvalidMessage as exc:
                await _reject(topics, message, exc, priority)
                continue
            try:
                outcome = decide_request(request, topic_priority=priority, now=datetime.now(UTC))
                await append(topics.events, outcome)
            except Exception as exc:  # noqa: BLE001 - one poison record must not stop the agent
                log.exception("ingest failed", extra={"notification_id": request.id})
                await dead_letter(topics, message, f"internal error: {type(exc).__name__}: {exc}")
                continue
            _count(outcome, priority)

    app.agent(topics.requests[priority], name=f"herald.ingest.{priority.value}")(ingest)


async def _reject(topics: Topics, message: faust.types.Message, exc: InvalidMessage, priority: Priority) -> None:
    await dead_letter(topics, message, exc.reason)
    NOTIFICATIONS_REJECTED.labels(priority.value).inc()
    if exc.user_id and exc.event_id:
        # The user's history says a request was refused, even though its bytes were unusable.
        env = decide_unreadable(exc.event_id, exc.user_id, exc.reason, priority=priority, now=datetime.now(UTC))
        await append(topics.events, [env])


def _count(outcome: Iterable[Envelope], priority: Priority) -> None:
    for env in outcome:
        if env.type == "notification.accepted":
            NOTIFICATIONS_CREATED.labels(priority.value).inc()
        elif env.type == "notification.rejected":
            NOTIFICATIONS_REJECTED.labels(priority.value).inc()
