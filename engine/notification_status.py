"""The notification lifecycle as a pure fold: statuses, per-channel states and their transitions.

A notification's status (``pending`` until a channel delivers or every channel ends) and
each channel's state (``pending`` -> ``deferred``/``retrying`` -> ``delivered``, ``failed``,
``abandoned``, ``cancelled`` or ``expired``) are decided here, from the events of the log,
and nowhere else: the projector's batch writer (``projections.batch``) folds each batch
into the snapshots it loaded, and ``herald inbox --as-of`` folds a user's records with the
same ``fold``, so the read model and the audit tools cannot disagree on a status. No I/O:
snapshots are folded in place and never copied deeply (``data`` is opaque, never changed
after acceptance, and may be nested as deep as a producer chose).

Replaying the same events gives the same snapshots, and folding an event a second time
(a record that reached the log twice) changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas.envelope import Envelope
from schemas.events import (
    BulkTargetRefused,
    DeliveryAbandoned,
    DeliveryCancelled,
    DeliveryDeferred,
    DeliveryFailed,
    DeliveryRetryScheduled,
    DeliverySucceeded,
    NotificationAccepted,
    NotificationDeleted,
    NotificationDuplicate,
    NotificationExpired,
    NotificationRateLimited,
    NotificationRead,
    NotificationRejected,
)

log = logging.getLogger(__name__)

REFUSED = frozenset({"rejected", "rate_limited", "duplicate"})
"""Statuses of requests that never became a deliverable notification."""
OPEN_CHANNEL_STATES = frozenset({"pending", "deferred", "retrying"})
"""Channel states that may still end in a delivery."""
STATUSES = ("pending", "delivered", "failed", "expired", "cancelled", "rejected", "rate_limited", "duplicate")
"""Every notification status, in the order the API documents them."""
CHANNEL_STATES = ("pending", "deferred", "retrying", "delivered", "failed", "abandoned", "cancelled", "expired")
"""Every per-channel delivery state."""


@dataclass(slots=True)
class ChannelState:
    """Where a notification stands on one channel (mirror of ``notification_channels``)."""

    state: str = "pending"
    attempts: int = 0
    target: str | None = None
    provider_id: str | None = None
    error: str | None = None
    delivered_at: datetime | None = None
    next_attempt_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(slots=True)
class NotificationState:
    """One notification row and its channel rows, as the fold sees them."""

    id: str
    user_id: str
    status: str
    created_at: datetime
    title: str = ""
    body: str = ""
    priority: str = "medium"
    channels: list[str] = field(default_factory=list)
    category: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    error: str | None = None
    device_token: str | None = None
    correlation_id: str | None = None
    idempotency_key: str | None = None
    collapse_key: str | None = None
    delivered_at: datetime | None = None
    read_at: datetime | None = None
    deleted_at: datetime | None = None
    expires_at: datetime | None = None
    deliver_after: datetime | None = None
    channel_states: dict[str, ChannelState] = field(default_factory=dict)


States = dict[str, NotificationState]


def notification_id_of(env: Envelope) -> str | None:
    """Id of the notification an event concerns (``None`` for device and contact events)."""
    value = getattr(env.data, "notification_id", None)
    return value if isinstance(value, str) else None


def fold(states: States, env: Envelope) -> None:
    """Apply ``env`` to the snapshots in ``states`` (in place)."""
    event = env.data
    if isinstance(event, NotificationAccepted):
        _accepted(states, env, event)
        return
    if isinstance(event, NotificationRejected | NotificationRateLimited | NotificationDuplicate | BulkTargetRefused):
        _refused(states, env)
        return
    nid = notification_id_of(env)
    if nid is None:
        return
    state = states.get(nid)
    if state is None:
        # The log is the truth: a fact about a notification we never saw accepted is kept in
        # the ledger and deliveries, but has no inbox row to change.
        log.info("event for unknown notification", extra={"notification_id": nid, "event_type": env.type})
        return
    if isinstance(event, NotificationRead):
        state.read_at = state.read_at or env.time
        return
    if isinstance(event, NotificationDeleted):
        state.deleted_at = state.deleted_at or env.time
        return
    if state.status in REFUSED:
        return
    _delivery(state, env)
    state.status = derive_status(state)
    state.attempts = sum(c.attempts for c in state.channel_states.values())
    delivered = [c.delivered_at for c in state.channel_states.values() if c.delivered_at is not None]
    state.delivered_at = min(delivered) if delivered else None


def _accepted(states: States, env: Envelope, event: NotificationAccepted) -> None:
    if event.notification_id in states:
        return  # first fact wins: a notification is created once
    states[event.notification_id] = NotificationState(
        id=event.notification_id,
        user_id=event.user_id,
        status="pending",
        created_at=event.requested_at,
        title=event.title,
        body=event.body,
        priority=event.priority,
        channels=list(event.channels),
        category=event.category,
        data=dict(event.data),
        device_token=getattr(event, "device_token", None),
        correlation_id=env.correlationid,
        idempotency_key=event.idempotency_key,
        collapse_key=event.collapse_key,
        expires_at=event.expires_at,
        deliver_after=event.deliver_after,
        channel_states={ch: ChannelState(updated_at=env.time) for ch in event.channels},
    )


def _refused(states: States, env: Envelope) -> None:
    event = env.data
    nid = notification_id_of(env)
    if nid is None or nid in states:
        return  # e.g. a retried request with the same id: the original stands
    status, error, priority = "rejected", None, env.priority or "medium"
    token = None
    if isinstance(event, BulkTargetRefused):  # refused by the API's bulk send, never published
        error, token = event.reason, event.target if event.target_kind == "device_token" else None
    elif isinstance(event, NotificationRejected):
        error = "; ".join(event.reasons)
    elif isinstance(event, NotificationRateLimited):
        status, priority = "rate_limited", event.priority
        error = f"rate limit of {event.limit} per {event.window_seconds}s exceeded"
    elif isinstance(event, NotificationDuplicate):
        status, error = "duplicate", f"duplicate of {event.original_id}"
    states[nid] = NotificationState(
        id=nid,
        user_id=getattr(event, "user_id", None) or "",
        status=status,
        created_at=env.time,
        priority=priority if priority in ("high", "medium", "low") else "medium",
        error=error,
        device_token=token,
        correlation_id=env.correlationid,
    )


def _delivery(state: NotificationState, env: Envelope) -> None:
    event = env.data
    if isinstance(event, NotificationExpired):
        names = [event.channel] if event.channel else list(state.channel_states)
        for name in names:
            ch = state.channel_states.setdefault(name, ChannelState())
            if ch.state in OPEN_CHANNEL_STATES:
                ch.state, ch.updated_at = "expired", env.time
        if not state.channel_states:
            state.status = "expired"
        return
    channel = getattr(event, "channel", None)
    if not isinstance(channel, str):
        return
    ch = state.channel_states.setdefault(channel, ChannelState())
    ch.updated_at = env.time
    if isinstance(event, DeliverySucceeded):
        ch.state, ch.target, ch.provider_id, ch.error = "delivered", event.target, event.provider_id, None
        ch.attempts = max(ch.attempts, event.attempt)
        ch.delivered_at = ch.delivered_at or env.time
        ch.next_attempt_at = None
        return
    if ch.state == "delivered":
        return  # a delivery, once made, is not undone by a later deferral or cancellation
    if isinstance(event, DeliveryDeferred):
        ch.state = "deferred"
    elif isinstance(event, DeliveryFailed):
        ch.state = "retrying" if event.retriable else "failed"
        ch.attempts, ch.target, ch.error = max(ch.attempts, event.attempt), event.target, event.error
        state.error = event.error
    elif isinstance(event, DeliveryRetryScheduled):
        ch.state, ch.next_attempt_at = "retrying", event.due_at
        ch.attempts = max(ch.attempts, event.attempt - 1)
    elif isinstance(event, DeliveryAbandoned):
        ch.state, ch.error, ch.next_attempt_at = "abandoned", event.error, None
        ch.attempts = max(ch.attempts, event.attempts)
        state.error = event.error
    elif isinstance(event, DeliveryCancelled):
        ch.state, ch.next_attempt_at = "cancelled", None


def derive_status(state: NotificationState) -> str:
    """The notification's status from its channels: one delivery is enough to be delivered."""
    if state.status in REFUSED:
        return state.status
    channel_states = [c.state for c in state.channel_states.values()]
    if not channel_states:
        return state.status
    if "delivered" in channel_states:
        return "delivered"
    if any(s in OPEN_CHANNEL_STATES for s in channel_states):
        return "pending"
    if all(s == "expired" for s in channel_states):
        return "expired"
    if all(s == "cancelled" for s in channel_states):
        return "cancelled"
    return "failed"
