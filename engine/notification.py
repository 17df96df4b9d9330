"""Decisions on a notification request: accept it or reject it, with the reason.

Pure: no I/O, no clock (``now`` is passed in), deterministic ids derived from the
request id so that reprocessing a request yields the very same events.
"""

from __future__ import annotations

from datetime import datetime

from engine.priority import Priority, resolve_channels
from schemas.envelope import Envelope
from schemas.events import Event, NotificationAccepted, NotificationRejected, NotificationRequested
from schemas.ids import derived_id

SOURCE = "herald/ingest"


def decide_request(request: Envelope, *, topic_priority: Priority, now: datetime) -> tuple[Envelope, ...]:
    """What becomes of ``request`` (a ``notification.requested``) read from ``topic_priority``'s topic."""
    cmd = request.data
    if not isinstance(cmd, NotificationRequested):
        return (_rejected(request, cmd_user(request), [f"expected notification.requested, got {request.type}"], now),)
    reasons: list[str] = []
    if cmd.priority is not None and cmd.priority != topic_priority:
        reasons.append(f"priority {cmd.priority!r} does not match topic priority {topic_priority.value!r}")
    if request.userid is not None and request.userid != cmd.user_id:
        reasons.append(f"userid attribute {request.userid!r} does not match data.user_id {cmd.user_id!r}")
    if request.priority is not None and request.priority != topic_priority:
        reasons.append(
            f"priority attribute {request.priority!r} does not match topic priority {topic_priority.value!r}"
        )
    if reasons:
        return (_rejected(request, cmd.user_id, reasons, now),)
    # Positional, in the class's field order (a keyword call matches 18 names on every request;
    # tests/unit/test_ingest_field_order.py checks each field lands where it belongs).
    accepted = NotificationAccepted(
        request.id,  # notification_id
        cmd.user_id,  # user_id
        cmd.title,  # title
        cmd.body,  # body
        topic_priority.value,  # priority
        resolve_channels(cmd.channels),  # channels
        cmd.category,  # category
        cmd.data,  # data
        request.time,  # requested_at
        cmd.idempotency_key,  # idempotency_key
        cmd.collapse_key,  # collapse_key
        cmd.expires_at,  # expires_at
        cmd.deliver_after,  # deliver_after
        cmd.device_token,  # device_token
        cmd.email,  # email
        cmd.badge,  # badge
        cmd.sound,  # sound
        cmd.push_type,  # push_type
    )
    return (follow(request, accepted, now=now, source=SOURCE),)


def cmd_user(request: Envelope) -> str:
    """Best-known recipient of ``request``."""
    return getattr(request.data, "user_id", None) or request.userid or ""


def follow(cause: Envelope, event: Event, *, now: datetime, source: str) -> Envelope:
    """The envelope of ``event`` caused by ``cause``: stable id, same subject and correlation."""
    subject = getattr(event, "notification_id", None) or cause.subject or cause.id
    return Envelope(  # positional, in the envelope's field order
        derived_id(cause.id, event.TYPE, *_discriminator(event)),  # id
        source,  # source
        now,  # time
        event,  # data
        subject,  # subject
        getattr(event, "user_id", None) or cause.userid,  # userid
        getattr(event, "priority", None) or cause.priority,  # priority
        cause.correlationid or cause.id,  # correlationid
    )


_DISCRIMINATING = ("channel", "target", "attempt", "reason")
_DISCRIMINATES: dict[type, bool] = {}
"""Per class: whether its events may have any of ``_DISCRIMINATING`` (an acceptance has none of them)."""


def _discriminator(event: object) -> tuple[str, ...]:
    # Two events of one type caused by one input (one per channel, per target, per
    # attempt, per reason for deferring) need distinct ids.
    cls = type(event)
    discriminates = _DISCRIMINATES.get(cls)
    if discriminates is None:
        # A slotted event has exactly its class's attributes; any other object may have more.
        discriminates = any(hasattr(cls, name) for name in _DISCRIMINATING) or hasattr(event, "__dict__")
        _DISCRIMINATES[cls] = discriminates
    if not discriminates:  # getattr(event, name, None) would be None for each of them
        return ()
    channel = getattr(event, "channel", None)
    parts = [channel] if isinstance(channel, str) else []
    for name in ("target", "attempt", "reason"):
        value = getattr(event, name, None)
        if isinstance(value, str | int) and not isinstance(value, bool):
            parts.append(f"{name}={value}")
    return tuple(parts)


def _rejected(request: Envelope, user_id: str, reasons: list[str], now: datetime) -> Envelope:
    event = NotificationRejected(notification_id=request.id, user_id=user_id, reasons=tuple(reasons))
    return follow(request, event, now=now, source=SOURCE)


def decide_unreadable(event_id: str, user_id: str, reason: str, *, priority: Priority, now: datetime) -> Envelope:
    """``notification.rejected`` for a request whose bytes were invalid but whose id and user could be read."""
    event = NotificationRejected(notification_id=event_id, user_id=user_id, reasons=(reason,))
    return Envelope(
        id=derived_id(event_id, event.TYPE),
        source=SOURCE,
        time=now,
        data=event,
        subject=event_id,
        userid=user_id,
        priority=priority.value,
        correlationid=event_id,
    )


def accepted_event(env: Envelope) -> NotificationAccepted:
    """The payload of ``env``, which must be a ``notification.accepted``."""
    if not isinstance(env.data, NotificationAccepted):
        raise TypeError(f"expected notification.accepted, got {env.type}")
    return env.data
