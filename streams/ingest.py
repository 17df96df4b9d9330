"""Ingest: one agent per priority topic; decode, validate, deduplicate, rate-limit, append the outcome.

Bad bytes go to the dead-letter topic with the reason (plus ``notification.rejected``
when a user and id can be read). Each user's admission state (used request keys,
rate windows) lives in the ``herald-admission`` table, co-partitioned with the
request topics (all keyed by user), so it survives a restart via its changelog.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import faust

from engine.admission import Admission, AdmissionPolicy, decide_admission, evolve
from engine.notification import cmd_user, decide_request, decide_unreadable
from engine.priority import Priority
from engine.rate_limit import default_limits
from engine.settings import Settings
from schemas.codec import decode
from schemas.envelope import Envelope
from schemas.errors import InvalidMessage
from schemas.events import NotificationRejected
from streams.metrics import (
    DEAD_LETTERED,
    NOTIFICATIONS_CREATED,
    NOTIFICATIONS_DUPLICATE,
    NOTIFICATIONS_RATE_LIMITED,
    NOTIFICATIONS_REJECTED,
    PRIORITY_WAITS,
)
from streams.priority_gate import PriorityGate
from streams.priority_poll import LagProbe, install_priority_polls
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


def record_source(message: faust.types.Message) -> str:
    """``topic/partition/offset`` of a record: its identity for redelivery detection."""
    return f"{message.topic}/{message.partition}/{message.offset}"


async def dead_letter(
    topics: Topics, message: faust.types.Message, reason: str, *, extra: Iterable[tuple[str, bytes]] = ()
) -> None:
    """Copy the raw record to the dead-letter topic with why and where it came from.

    Never fails on what the record carries: a key or header that cannot be re-encoded
    (a lone surrogate, a null value) is escaped, so the poison itself cannot stop this.
    """
    headers = [
        *(_safe_header(k, v) for k, v in header_items(message.headers)),
        ("herald-error", _utf8(reason)[:4000]),
        ("herald-source-topic", _utf8(message.topic)),
        ("herald-source-partition", str(message.partition).encode()),
        ("herald-source-offset", str(message.offset).encode()),
        *(_safe_header(k, v) for k, v in extra),
    ]
    key = message.key if message.key is None or isinstance(message.key, bytes) else _utf8(str(message.key))
    fut = await topics.deadletter.send(key=key, value=message.value, headers=headers)
    await fut
    DEAD_LETTERED.labels(message.topic).inc()
    log.warning(
        "dead-lettered record",
        extra={
            "error": _utf8(reason).decode(),
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
        },
    )


def _utf8(text: str) -> bytes:
    """UTF-8 bytes of ``text``, lone surrogates escaped (``\\udc80``) instead of raising."""
    return text.encode("utf-8", "backslashreplace")


def _safe_header(key: Any, value: Any) -> tuple[str, bytes]:
    name = _utf8(key if isinstance(key, str) else repr(key)).decode()
    if value is None or isinstance(value, bytes):
        return name, value or b""
    return name, _utf8(str(value))


def admission_policy(settings: Settings) -> AdmissionPolicy:
    """The rate limits and dedupe window configured in ``settings``."""
    limits = default_limits(
        settings.rate_limit_high,
        settings.rate_limit_medium,
        settings.rate_limit_low,
        settings.rate_limit_window_seconds,
    )
    return AdmissionPolicy(limits, settings.dedupe_window_seconds)


def install(app: faust.App, topics: Topics, settings: Settings) -> PriorityGate:
    """Register one ingest agent per priority, sharing one admission table and priority gate.

    Also makes the app's consumer poll request partitions by agent backlog and priority
    (``streams.priority_poll``); call it before the app starts.
    """
    table = app.Table(
        "herald-admission",
        default=None,
        partitions=settings.topic_partitions,
        help="Per-user request keys and rate windows (engine.admission.Admission).",
    )
    gate = PriorityGate(enabled=settings.priority_isolation)
    policy = admission_policy(settings)
    probe = LagProbe()
    for priority in Priority:
        gate.track_lag(priority, _lag_probe(app, topics.names.request(priority), probe))
        _install_one(app, topics, settings, priority, table, gate, policy)
    install_priority_polls(
        app,
        gate,
        topics.names,
        max_backlog=settings.kafka_max_poll_records,
        by_priority=settings.priority_isolation,
        lag=probe,
    )
    return gate


def _lag_probe(app: faust.App, topic: str, probe: LagProbe) -> Callable[[], bool]:
    def lagging() -> bool:
        consumer = app.consumer
        client = consumer._thread._ensure_consumer() if hasattr(consumer, "_thread") else None
        if client is None:
            return False
        return any(probe(client, tp) for tp in consumer.assignment() if tp.topic == topic)

    return lagging


def _install_one(
    app: faust.App,
    topics: Topics,
    settings: Settings,
    priority: Priority,
    table: Any,
    gate: PriorityGate,
    policy: AdmissionPolicy,
) -> None:
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        queue = stream.channel.queue  # type: ignore[attr-defined]
        gate.track(priority, queue.qsize)
        async for event in stream.events():
            if await gate.wait_turn(priority):
                PRIORITY_WAITS.labels(priority.value).inc()
            with gate.busy(priority):
                await _handle(event.message, topics, settings, priority, table, policy)

    app.agent(topics.requests[priority], name=f"herald.ingest.{priority.value}")(ingest)


async def _handle(
    message: faust.types.Message,
    topics: Topics,
    settings: Settings,
    priority: Priority,
    table: Any,
    policy: AdmissionPolicy,
) -> None:
    try:
        request = decode(message.value, header_items(message.headers), max_bytes=settings.max_request_bytes)
    except InvalidMessage as exc:
        await _reject(topics, message, exc, priority)
        return
    except Exception as exc:  # RecursionError, MemoryError...: a decoder failure is this record's fault
        log.exception("undecodable record", extra={"topic": message.topic, "offset": message.offset})
        await _reject(topics, message, InvalidMessage(f"undecodable: {type(exc).__name__}: {exc}"), priority)
        return
    try:
        now = datetime.now(UTC)
        decided = decide_request(request, topic_priority=priority, now=now)[0]
        user = cmd_user(request)
        source = record_source(message)
        state = Admission.from_json(table.get(user))
        outcome = decide_admission(state, decided, source=source, policy=policy, now=now)
        after = evolve(state, outcome, source=source, policy=policy)
        if after != state:
            table[user] = after.to_json()
        await append(topics.events, [outcome])
        if isinstance(outcome.data, NotificationRejected):
            # Valid bytes, invalid request (e.g. priority does not match the topic): the raw
            # record goes to the dead letters too, so every refused input is in one place.
            await dead_letter(topics, message, "; ".join(outcome.data.reasons))
    except Exception as exc:  # one poison record must not stop the agent
        log.exception("ingest failed", extra={"notification_id": request.id})
        await dead_letter(topics, message, f"internal error: {type(exc).__name__}: {exc}")
        return
    _count(outcome, priority)


async def _reject(topics: Topics, message: faust.types.Message, exc: InvalidMessage, priority: Priority) -> None:
    await dead_letter(topics, message, exc.reason)
    NOTIFICATIONS_REJECTED.labels(priority.value).inc()
    if exc.user_id and exc.event_id:
        # The user's history says a request was refused, even though its bytes were unusable.
        try:
            env = decide_unreadable(exc.event_id, exc.user_id, exc.reason, priority=priority, now=datetime.now(UTC))
            await append(topics.events, [env])
        except Exception:  # e.g. an id that cannot be encoded: the dead letter above already has the reason
            log.exception("could not record the rejection in the event log", extra={"topic": message.topic})


def _count(outcome: Envelope, priority: Priority) -> None:
    extra = {
        "notification_id": outcome.subject,
        "user_id": outcome.userid,
        "event_type": outcome.type,
        "correlation_id": outcome.correlationid,
    }
    if outcome.type == "notification.accepted":
        NOTIFICATIONS_CREATED.labels(priority.value).inc()
        log.debug("accepted", extra=extra)
    elif outcome.type == "notification.rejected":
        NOTIFICATIONS_REJECTED.labels(priority.value).inc()
        log.info("rejected", extra=extra)
    elif outcome.type == "notification.duplicate":
        NOTIFICATIONS_DUPLICATE.labels(priority.value).inc()
        log.info("duplicate", extra=extra)
    elif outcome.type == "notification.rate_limited":
        NOTIFICATIONS_RATE_LIMITED.labels(priority.value).inc()
        log.info("rate limited", extra=extra)
