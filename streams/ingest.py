"""Ingest: one agent per priority topic; decode, validate, deduplicate, rate-limit, append
the outcome and route what was accepted, in one pass over each request.

Bad bytes go to the dead-letter topic with the reason (plus ``notification.rejected``
when a user and id can be read). Admission state (used request keys; the rate windows
derive from them) lives in the ``herald-dedupe`` table, one small entry per key,
co-partitioned with the request topics (all keyed by user), so it survives a restart
via its changelog (``streams.admission_store``). An accepted notification is routed at
once (``streams.router.route_accepted``): the request is validated against its JSON
Schema here, once; later hops carry the acceptance's bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import faust

from engine import correlation
from engine.admission import AdmissionPolicy
from engine.notification import decide_request, decide_unreadable
from engine.priority import Priority
from engine.rate_limit import default_limits
from engine.settings import Settings
from schemas.codec import decode, encode
from schemas.envelope import Envelope
from schemas.errors import InvalidMessage
from schemas.events import NotificationAccepted, NotificationRejected
from streams.admission_store import AdmissionStore
from streams.dead_letters import dead_letter, header_items, read_or_dead_letter, record_source
from streams.internals import TakeEpoch, consumer_taking, current_assignment, kafka_client
from streams.live_dispatch import LiveDispatch
from streams.metrics import (
    NOTIFICATIONS_CREATED,
    NOTIFICATIONS_DUPLICATE,
    NOTIFICATIONS_RATE_LIMITED,
    NOTIFICATIONS_REJECTED,
)
from streams.priority_gate import PriorityGate
from streams.priority_poll import LagProbe, install_priority_polls
from streams.publish import append, send
from streams.request_inbox import Inbox, consumer_yielding, process
from streams.router import Contacts, no_contacts, route_accepted
from streams.topics import Topics

__all__ = ["Ingest", "admission_policy", "dead_letter", "header_items", "install", "record_source"]

log = logging.getLogger(__name__)


def admission_policy(settings: Settings) -> AdmissionPolicy:
    """The rate limits and dedupe window configured in ``settings``."""
    limits = default_limits(
        settings.rate_limit_high,
        settings.rate_limit_medium,
        settings.rate_limit_low,
        settings.rate_limit_window_seconds,
    )
    return AdmissionPolicy(limits, settings.dedupe_window_seconds)


def install(
    app: faust.App, topics: Topics, settings: Settings, live: LiveDispatch, contacts: Contacts = no_contacts
) -> PriorityGate:
    """Register one ingest agent per priority, sharing one admission table and priority gate.

    ``contacts`` gives a user's contact preferences for routing (``streams.router``).

    Also makes the app's consumer poll request partitions by agent backlog and priority
    (``streams.priority_poll``) and hand their records straight to the agents' inboxes
    (``streams.request_inbox``); call it before the app starts.
    """
    table = app.Table(
        "herald-dedupe",
        default=None,
        partitions=settings.topic_partitions,
        help="Per-user request keys: first use, source record and priority (streams.admission_store).",
    )
    policy = admission_policy(settings)
    store = AdmissionStore(table, policy)

    async def forget_derived_state(sender: Any, *args: Any, **_: Any) -> None:
        # Partitions may come back after another worker wrote them: rebuild from the table.
        store.invalidate()

    app.on_partitions_revoked.connect(forget_derived_state)  # type: ignore[arg-type]

    gate = PriorityGate(enabled=settings.priority_isolation)
    probe = LagProbe()
    ingest = Ingest(topics, settings, store, policy, live, contacts)
    inboxes: dict[str, Inbox] = {}
    epoch = TakeEpoch()  # the consumer's moves: a record taken before the last one is read again
    for priority in map(Priority, settings.worker_priorities):  # this worker's priorities only (streams.app)
        inbox = inboxes[topics.names.request(priority)] = Inbox(epoch)
        gate.track(priority, inbox.__len__)
        gate.track_lag(priority, _lag_probe(app, topics.names.request(priority), probe))
        _install_one(app, topics, priority, gate, ingest, inbox)
    takers = {topic: inbox.put for topic, inbox in inboxes.items()}
    app.transport.Consumer = consumer_yielding(consumer_taking(app.transport.Consumer, takers, epoch))  # type: ignore[misc]
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
    # Asked once per lower-priority record: the partitions of ``topic`` are worked out once
    # per assignment (aiokafka builds a new one at every rebalance), not on every call.
    cached: list[Any] = [None, ()]  # [assignment, its partitions of ``topic``]

    def lagging() -> bool:
        client = kafka_client(app.consumer)
        if client is None:
            return False
        assignment = current_assignment(client)
        if assignment is None:
            return False
        if assignment is not cached[0]:
            cached[0], cached[1] = assignment, tuple(tp for tp in assignment.tps if tp.topic == topic)
        return any(probe(client, tp) for tp in cached[1])

    return lagging


def _install_one(
    app: faust.App, topics: Topics, priority: Priority, gate: PriorityGate, ingest: Ingest, inbox: Inbox
) -> None:
    async def agent(stream: faust.StreamT[bytes]) -> None:
        # The stream subscribes the topic; its records come through the inbox (streams.request_inbox).
        await process(app, inbox, priority, gate, ingest)

    app.agent(topics.requests[priority], name=f"herald.ingest.{priority.value}")(agent)


class Ingest:
    """What one request record becomes: a decision on the log and, if accepted, its deliveries."""

    def __init__(
        self,
        topics: Topics,
        settings: Settings,
        store: AdmissionStore,
        policy: AdmissionPolicy,
        live: LiveDispatch,
        contacts: Contacts = no_contacts,
    ) -> None:
        self._topics = topics
        self._contacts = contacts
        self._settings = settings
        self._store = store
        self._policy = policy
        self._live = live

    async def handle(self, message: faust.types.Message, priority: Priority) -> None:
        """Decide and route one request record; never raises for the record's content."""
        topics = self._topics
        correlation.bind(None)  # the request's correlation id once read (herald.logs adds it to each line)

        async def rejected(exc: InvalidMessage) -> None:
            await _rejected(topics, message, exc, priority)

        request = await read_or_dead_letter(topics, message, self._decode, on_invalid=rejected)
        if request is None:  # dead-lettered with the reason, whatever the decoder raised
            return
        correlation.bind(request.correlationid or request.id)
        try:
            try:
                outcome = self._admit(request, message, priority)
            finally:  # the admission entries' changelog records, straight to the producer
                await self._store.send_changes()
            raw = encode(outcome)
            appended = await send(topics.events, (outcome.userid or "").encode(), raw)
            if isinstance(outcome.data, NotificationAccepted):
                await route_accepted(topics, self._settings, self._live, outcome, raw, appended, self._contacts)
            elif isinstance(outcome.data, NotificationRejected):
                # Valid bytes, invalid request (e.g. priority does not match the topic): the raw
                # record goes to the dead letters too, so every refused input is in one place.
                await dead_letter(topics, message, "; ".join(outcome.data.reasons))
        except Exception as exc:  # one poison record must not stop the agent
            log.exception("ingest failed", extra={"notification_id": request.id})
            await dead_letter(topics, message, f"internal error: {type(exc).__name__}: {exc}")
            return
        _count(outcome, priority)

    def _decode(self, message: faust.types.Message) -> Envelope:
        return decode(message.value, header_items(message.headers), max_bytes=self._settings.max_request_bytes)

    def _admit(self, request: Envelope, message: faust.types.Message, priority: Priority) -> Envelope:
        now = datetime.now(UTC)
        decided = decide_request(request, topic_priority=priority, now=now)[0]
        accepted = decided.data
        if not isinstance(accepted, NotificationAccepted):
            return decided
        store = self._store
        partition = message.partition
        store.expire(partition, now=now.timestamp())
        # decide_admission, evolve and the writes (streams.admission_store)
        return store.admit(decided, accepted, source=record_source(message), partition=partition, now=now)


async def _rejected(topics: Topics, message: faust.types.Message, exc: InvalidMessage, priority: Priority) -> None:
    """Count an undecodable request (already dead-lettered) and, if its user and id were read, tell its history."""
    NOTIFICATIONS_REJECTED.labels(priority.value).inc()
    if exc.user_id and exc.event_id:
        # The user's history says a request was refused, even though its bytes were unusable.
        try:
            env = decide_unreadable(exc.event_id, exc.user_id, exc.reason, priority=priority, now=datetime.now(UTC))
            await append(topics.events, [env])
        except Exception:  # e.g. an id that cannot be encoded: the dead letter above already has the reason
            log.exception("could not record the rejection in the event log", extra={"topic": message.topic})


_OUTCOMES = {
    "notification.accepted": (NOTIFICATIONS_CREATED, logging.DEBUG, "accepted"),
    "notification.rejected": (NOTIFICATIONS_REJECTED, logging.INFO, "rejected"),
    "notification.duplicate": (NOTIFICATIONS_DUPLICATE, logging.INFO, "duplicate"),
    "notification.rate_limited": (NOTIFICATIONS_RATE_LIMITED, logging.INFO, "rate limited"),
}
"""Per outcome type: its counter, and the level and message of its log line."""
_COUNTERS: dict[tuple[str, Priority], Any] = {}
"""Each counter's child per outcome type and priority, looked up once (``labels()`` takes a lock every call)."""


def _count(outcome: Envelope, priority: Priority) -> None:
    event_type = outcome.type
    known = _OUTCOMES.get(event_type)
    if known is None:
        return
    metric, level, message = known
    counter = _COUNTERS.get((event_type, priority))
    if counter is None:
        counter = _COUNTERS[(event_type, priority)] = metric.labels(priority.value)
    counter.inc()
    if log.isEnabledFor(level):
        extra = {
            "notification_id": outcome.subject,
            "user_id": outcome.userid,
            "event_type": event_type,
            "correlation_id": outcome.correlationid,
        }
        log.log(level, message, extra=extra)
