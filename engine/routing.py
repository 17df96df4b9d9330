"""Routing of an accepted notification: which channels now, which later, which never.

- ``expires_at`` passed -> ``notification.expired``, nothing is delivered (never late).
- ``deliver_after`` in the future -> every channel is scheduled for then
  (``delivery.deferred`` with reason ``deliver_after``).
- Email fallback: when the request names both ``websocket`` and ``email`` and a
  fallback delay is configured, the WebSocket goes first and the email is scheduled
  for the delay later (``delivery.deferred`` with reason ``fallback``); a read before
  then cancels it.
Pure: the agents in ``streams/router.py`` and ``streams/scheduler.py`` carry it out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from engine.notification import accepted_event, follow
from engine.priority import Channel
from engine.schedule import Due, Kind
from schemas.codec import decode, envelope_to_dict
from schemas.envelope import Envelope
from schemas.events import DeliveryDeferred, NotificationAccepted, NotificationExpired

SOURCE = "herald/router"


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """What the router does with one accepted notification."""

    now: tuple[str, ...]
    """Channels whose sinks get the notification now."""
    later: tuple[Due, ...]
    """Work scheduled for later."""
    events: tuple[Envelope, ...]
    """Decisions to append to the log (expired, deferred)."""


def is_expired(accepted: NotificationAccepted, *, now: datetime) -> bool:
    """True once ``expires_at`` has passed: the notification must not be delivered any more."""
    return accepted.expires_at is not None and now >= accepted.expires_at


def expired_event(cause: Envelope, *, channel: str | None, now: datetime, source: str = SOURCE) -> Envelope | None:
    """``notification.expired`` for ``cause`` (on ``channel``, or all) if it is too late at ``now``."""
    accepted = accepted_event(cause)
    if accepted.expires_at is None or now < accepted.expires_at:
        return None
    expired = NotificationExpired(accepted.notification_id, accepted.user_id, accepted.expires_at, channel=channel)
    return follow(cause, expired, now=now, source=source)


def plan_route(cause: Envelope, *, now: datetime, fallback_seconds: float) -> RoutePlan:
    """Route ``cause`` (a ``notification.accepted``) at ``now``."""
    accepted = accepted_event(cause)
    expired = expired_event(cause, channel=None, now=now)
    if expired is not None:
        return RoutePlan((), (), (expired,))
    start = accepted.deliver_after if accepted.deliver_after and accepted.deliver_after > now else now
    channels = accepted.channels
    fallback = fallback_seconds > 0 and Channel.WEBSOCKET in channels and Channel.EMAIL in channels
    first = tuple(c for c in channels if not (fallback and c == Channel.EMAIL))
    later: list[Due] = []
    events: list[Envelope] = []
    if start > now:
        later += [due("deliver", cause, c, start) for c in first]
        events += [_deferred(cause, c, f"deliver_after {start.isoformat()}", now) for c in first]
        first = ()
    if fallback:
        at = start + timedelta(seconds=fallback_seconds)
        later.append(due("fallback", cause, Channel.EMAIL.value, at))
        events.append(_deferred(cause, Channel.EMAIL.value, f"fallback: email if unread at {at.isoformat()}", now))
    return RoutePlan(first, tuple(later), tuple(events))


def fire(item: Due, *, now: datetime) -> tuple[Envelope, Envelope | None]:
    """The accepted notification of a due ``item``, and ``notification.expired`` if it is too late."""
    cause = accepted_of(item)
    return cause, expired_event(cause, channel=item.channel, now=now)


def accepted_of(item: Due) -> Envelope:
    """The ``notification.accepted`` envelope an item carries."""
    return decode(json.dumps(item.accepted).encode())


def due(kind: Kind, cause: Envelope, channel: str, at: datetime, *, attempt: int = 1, target: str | None = None) -> Due:
    """An item delivering ``cause`` on ``channel`` at ``at``."""
    accepted = accepted_event(cause)
    return Due(kind, accepted.notification_id, channel, at.timestamp(), envelope_to_dict(cause), attempt, target)


def _deferred(cause: Envelope, channel: str, reason: str, now: datetime) -> Envelope:
    accepted = accepted_event(cause)
    event = DeliveryDeferred(accepted.notification_id, accepted.user_id, channel, reason)
    return follow(cause, event, now=now, source=SOURCE)
