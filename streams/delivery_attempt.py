"""The generic delivery path every non-live channel (email, APNs) plugs into.

A channel provides a ``Sink``: ``targets()`` says where a notification goes for the
user (email addresses, device tokens), ``send()`` hands it to one target and returns
the provider's id, or raises ``engine.retry.DeliveryError`` (``retriable`` or not).
``install(app, topics, settings, sink)`` registers an agent on the channel's delivery
topic that, per target: checks expiry, sends within a timeout, and turns the outcome
into ``delivery.succeeded`` / ``delivery.failed`` + ``delivery.retry_scheduled`` (the
retry is handed to the scheduler, so it survives a restart) / ``delivery.abandoned``
(+ the work record in the dead-letter topic), using ``engine.retry``'s pure policy.

A sink may take several work records at once (``max_in_flight``: the agent's
concurrency, one Faust actor per record in flight, all reading one queue): a provider
that answers each send in a round trip (APNs over HTTP/2) is then kept busy instead of
waiting on each answer in turn. At-least-once is unchanged: an actor acks its record
only when the send's sent pair is on the broker and its outcome queued, and Faust
commits a partition's offset only up to the first record not yet acked (the commit
guard in ``streams.internals``). Records of one user may then be sent out of order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import faust

from engine import correlation
from engine.notification import accepted_event, follow
from engine.retry import DeliveryError, RetryPolicy, attempt_outcome
from engine.routing import due, expired_event
from engine.settings import Settings
from schemas.codec import decode_written
from schemas.envelope import Envelope
from schemas.errors import HeraldError
from schemas.events import (
    DeliveryAbandoned,
    DeliveryCancelled,
    DeliveryRetryScheduled,
    DeliverySucceeded,
    NotificationAccepted,
)
from streams.dead_letters import dead_letter, decode_or_dead_letter, header_items
from streams.delivery_work import work_of
from streams.metrics import (
    DELIVERIES_ABANDONED,
    DELIVERY_LATENCY,
    DELIVERY_RETRIES,
    DUPLICATE_SENDS_SUPPRESSED,
    NOTIFICATIONS_DELIVERED,
    NOTIFICATIONS_EXPIRED,
    NOTIFICATIONS_FAILED,
    SENT_TARGETS_EXPIRED,
)
from streams.publish import append
from streams.scheduler import send_schedule
from streams.sent_targets import InFlight, SentTargets, sent_ttl
from streams.topics import Topics

log = logging.getLogger(__name__)

SOURCE = "herald/delivery"

_SUCCEEDED: dict[tuple[str, str], tuple[Any, Any]] = {}
"""Per (channel, priority): the delivered counter's and the latency histogram's children, looked up once
(``labels()`` takes a lock on every call)."""


class Sink(Protocol):
    """Port of one delivery channel (email, APNs, webhook; declared in ``engine.channels``)."""

    channel: str
    """The channel it serves: ``email``, ``apns`` or ``webhook``.

    A sink may also have ``max_in_flight`` (int): work records its agent handles at once;
    without it, one after the other.
    """

    async def targets(self, accepted: NotificationAccepted) -> Sequence[str]:
        """Where ``accepted`` goes for its user (may be empty: nothing to do)."""
        ...

    async def send(self, accepted: NotificationAccepted, target: str) -> str | None:
        """Deliver to ``target``; return the provider's id. Raise ``DeliveryError`` on failure."""
        ...

    def bind(self, app: faust.App, topics: Topics, settings: Settings) -> None:
        """Declare what the sink needs on the worker's app (tables, agents); called before its agent."""
        ...

    async def close(self) -> None:
        """Release the sink's connections when the worker stops (idempotent)."""
        ...


def retry_policy(settings: Settings) -> RetryPolicy:
    """The retry policy configured in ``settings``."""
    return RetryPolicy(
        max_attempts=settings.retry_max_attempts,
        base_delay_seconds=settings.retry_base_delay_seconds,
        max_delay_seconds=settings.retry_max_delay_seconds,
        jitter=settings.retry_jitter,
    )


async def attempt(
    sink: Sink, accepted: NotificationAccepted, target: str, *, limit: float
) -> tuple[str | None, DeliveryError | None]:
    """One send, its failure (if any) expressed as a ``DeliveryError``."""
    try:
        async with asyncio.timeout(limit):  # no task per send, unlike wait_for
            return await sink.send(accepted, target), None
    except DeliveryError as exc:
        return None, exc
    except TimeoutError:
        return None, DeliveryError(f"no answer within {limit:g}s", retriable=True)
    except OSError as exc:  # connection refused/reset: the provider may be back later
        return None, DeliveryError(f"{type(exc).__name__}: {exc}", retriable=True)
    except HeraldError as exc:
        return None, DeliveryError(str(exc), retriable=exc.retriable)
    except Exception as exc:  # a sink bug fails this delivery, not the agent
        log.exception(
            "sink raised an unexpected error",
            extra={"channel": sink.channel, "notification_id": accepted.notification_id},
        )
        return None, DeliveryError(f"internal error: {type(exc).__name__}: {exc}", retriable=False)


def install(app: faust.App, topics: Topics, settings: Settings, sink: Sink) -> None:
    """Register the delivery agent of ``sink.channel``.

    A sink that needs the app itself (tables, the event log) may define
    ``bind(app, topics, settings)``; it is called first.
    """
    bind = getattr(sink, "bind", None)
    if bind is not None:
        bind(app, topics, settings)
    policy = retry_policy(settings)
    # (notification, target) pairs already handed over: a work record processed twice
    # (the router re-run after a crash, a redelivered record) never sends twice within
    # the retry horizon; older pairs expire (streams.sent_targets).
    table = app.Table(
        f"herald.sink.{sink.channel}.sent", default=None, partitions=settings.topic_partitions, key_type=str
    )
    sent = SentTargets(table, sent_ttl(settings))
    in_flight = InFlight()
    concurrency = max(1, int(getattr(sink, "max_in_flight", 1)))

    async def forget_index(sender: Any, *args: Any, **_: Any) -> None:
        sent.invalidate()  # partitions may come back after another worker wrote them

    app.on_partitions_revoked.connect(forget_index)  # type: ignore[arg-type]

    async def deliver(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            correlation.bind(None)  # this record's id once it is read; none for unreadable bytes
            headers = header_items(message.headers)
            cause = await read_work(topics, message, headers)
            if cause is None:
                continue
            correlation.bind(cause.correlationid or cause.id)  # on every log line of this delivery
            number, target = work_of(headers)
            await _deliver(topics, settings, sink, policy, message, cause, number, target, sent, in_flight)
            expired = sent.expire(message.partition)
            if expired:
                await sent.send_changes()  # the tombstones, in the order written (after any re-add before them)
                SENT_TARGETS_EXPIRED.labels(sink.channel).inc(expired)

    # concurrency > 1: that many actors read the topic's one queue, each a record at a time.
    app.agent(topics.deliveries[sink.channel], name=f"herald.sink.{sink.channel}", concurrency=concurrency)(deliver)


async def read_work(topics: Topics, message: faust.types.Message, headers: list[tuple[str, bytes]]) -> Envelope | None:
    """The work record's ``notification.accepted``, or ``None`` once it is dead-lettered.

    The worker wrote the record itself, from a request it validated: a structural decode
    (``schemas.codec.decode_written``) reads it without validating it against its schema
    again. A record not in that layout gets the full decode, which dead-letters it with its
    reason (or reads it, when only the layout differed).
    """
    try:
        cause = decode_written(message.value, headers, expect=NotificationAccepted)
    except Exception:  # a bug of the structural decode: loud, and the full decode decides
        log.exception("structural decode failed", extra={"topic": message.topic, "offset": message.offset})
        cause = None
    if cause is not None:
        return cause
    return await decode_or_dead_letter(topics, message, expect=NotificationAccepted)


async def _deliver(
    topics: Topics,
    settings: Settings,
    sink: Sink,
    policy: RetryPolicy,
    message: faust.types.Message,
    cause: Envelope,
    number: int,
    target: str | None,
    sent: SentTargets,
    in_flight: InFlight,
) -> None:
    accepted = accepted_event(cause)
    channel = sink.channel
    now = datetime.now(UTC)
    expired = expired_event(cause, channel=channel, now=now, source=SOURCE)
    if expired is not None:
        await append(topics.events, [expired])
        NOTIFICATIONS_EXPIRED.labels(channel).inc()
        return
    if target is not None:
        targets: Sequence[str] = [target]
    else:
        try:
            targets = await sink.targets(accepted)
        except HeraldError as exc:
            # Resolving targets failed (e.g. the registry is down): retry the whole channel.
            unresolved = DeliveryError(f"targets: {exc}", retriable=exc.retriable)
            await _record(topics, policy, message, cause, channel, "*", number, None, unresolved, now)
            return
    if not targets:
        none = DeliveryCancelled(
            accepted.notification_id, accepted.user_id, channel, reason=f"no {channel} target for the user"
        )
        await append(topics.events, [follow(cause, none, now=now, source=SOURCE)])
        return
    for each in targets:
        key = SentTargets.key(accepted.notification_id, each)
        async with in_flight.claim(key):  # another actor sending this pair finishes first
            if sent.sent(key):
                DUPLICATE_SENDS_SUPPRESSED.labels(channel).inc()
                log.info(
                    "already delivered; not sent again",
                    extra={
                        "notification_id": accepted.notification_id,
                        "channel": channel,
                        "user_id": accepted.user_id,
                    },
                )
                continue
            provider_id, failure = await attempt(sink, accepted, each, limit=settings.delivery_timeout_seconds)
            if failure is None:
                await sent.add_durably(key, provider_id, message.partition)  # on the broker before the outcome
        await _record(topics, policy, message, cause, channel, each, number, provider_id, failure, datetime.now(UTC))


async def _record(
    topics: Topics,
    policy: RetryPolicy,
    message: faust.types.Message,
    cause: Envelope,
    channel: str,
    target: str,
    number: int,
    provider_id: str | None,
    failure: DeliveryError | None,
    now: datetime,
) -> None:
    accepted = accepted_event(cause)
    events = attempt_outcome(
        cause,
        channel=channel,
        target=target,
        attempt=number,
        error=failure,
        provider_id=provider_id,
        policy=policy,
        now=now,
    )
    await append(topics.events, events)
    labels = (channel, accepted.priority)
    for env in events:
        data = env.data
        if isinstance(data, DeliverySucceeded):
            delivered = _SUCCEEDED.get(labels)
            if delivered is None:
                delivered = _SUCCEEDED[labels] = (
                    NOTIFICATIONS_DELIVERED.labels(*labels),
                    DELIVERY_LATENCY.labels(*labels),
                )
            delivered[0].inc()
            delivered[1].observe(data.latency_ms / 1000)
        elif isinstance(data, DeliveryRetryScheduled):
            NOTIFICATIONS_FAILED.labels(*labels).inc()
            DELIVERY_RETRIES.labels(*labels).inc()
            retry_target = None if target == "*" else target
            await send_schedule(
                topics, due("retry", cause, channel, data.due_at, attempt=data.attempt, target=retry_target)
            )
        elif isinstance(data, DeliveryAbandoned):
            NOTIFICATIONS_FAILED.labels(*labels).inc()
            DELIVERIES_ABANDONED.labels(*labels).inc()
            extra = [("herald-channel", channel.encode()), ("herald-attempts", str(data.attempts).encode())]
            if number == 1:  # a retry's record already names its target
                extra.append(("herald-target", target.encode()))
            await dead_letter(topics, message, f"delivery abandoned: {data.error}", extra=extra)
    if not log.isEnabledFor(logging.INFO):  # the line's fields are not built for nothing
        return
    log.info(
        "delivery attempt",
        extra={
            "notification_id": accepted.notification_id,
            "user_id": accepted.user_id,
            "channel": channel,
            "attempt": number,
            "event_type": events[-1].type,
            "correlation_id": cause.correlationid,
        },
    )
