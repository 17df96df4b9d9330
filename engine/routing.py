"""Routing of an accepted notification: which channels now, which later, which never.

- ``expires_at`` passed -> ``notification.expired``, nothing is delivered (never late).
- ``deliver_after`` in the future -> every channel is scheduled for then
  (``delivery.deferred`` with reason ``deliver_after``).
- The user's contact preferences (``contact.updated``, folded by the worker): a
  requested channel the contact leaves out of ``channels`` is not delivered
  (``delivery.cancelled``, reason ``turned off in the user's contact preferences``).
- Email fallback (the chain declared in ``engine.channels``: a channel with
  ``fallback_after``): when the request names both ``websocket`` and ``email`` and a
  fallback delay applies (the contact's ``email_fallback_minutes``, else the global
  setting), the WebSocket goes first and the email is scheduled for the delay later
  (``delivery.deferred`` with reason ``fallback``); a read before then cancels it.
Pure: the agents in ``streams/router.py`` and ``streams/scheduler.py`` carry it out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from engine.channels import REGISTRY
from engine.notification import accepted_event, follow
from engine.schedule import Due, Kind
from schemas.codec import decode, envelope_to_dict
from schemas.envelope import Envelope
from schemas.events import DeliveryCancelled, DeliveryDeferred, NotificationAccepted, NotificationExpired

SOURCE = "herald/router"
TURNED_OFF = "turned off in the user's contact preferences"
"""Reason of the ``delivery.cancelled`` of a channel the user's contact leaves out."""


@dataclass(frozen=True, slots=True)
class ContactPreferences:
    """What routing needs of a user's latest ``contact.updated``."""

    channels: frozenset[str]
    """Channels the user accepts."""
    email_fallback_minutes: int | None = None
    """The user's email fallback delay; ``None``: the deployment's default applies."""

    def fallback_seconds(self, default: float) -> float:
        """The fallback delay for this user (0: no fallback, the email goes at once)."""
        return default if self.email_fallback_minutes is None else self.email_fallback_minutes * 60.0


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


def plan_route(
    cause: Envelope, *, now: datetime, fallback_seconds: float, contact: ContactPreferences | None = None
) -> RoutePlan:
    """Route ``cause`` (a ``notification.accepted``) at ``now``.

    ``fallback_seconds`` is the deployment's email fallback delay; ``contact`` the
    recipient's preferences, if the user has any (they win over the default).
    """
    accepted = accepted_event(cause)
    expired = expired_event(cause, channel=None, now=now)
    if expired is not None:
        return RoutePlan((), (), (expired,))
    start = accepted.deliver_after if accepted.deliver_after and accepted.deliver_after > now else now
    channels = accepted.channels
    events: list[Envelope] = []
    if contact is not None:
        events += [_cancelled(cause, c, TURNED_OFF, now) for c in channels if c not in contact.channels]
        channels = tuple(c for c in channels if c in contact.channels)
        fallback_seconds = contact.fallback_seconds(fallback_seconds)
    fallbacks = fallback_channels(channels) if fallback_seconds > 0 else ()
    first = tuple(c for c in channels if c not in fallbacks)
    later: list[Due] = []
    if start > now:
        later += [due("deliver", cause, c, start) for c in first]
        events += [_deferred(cause, c, f"deliver_after {start.isoformat()}", now) for c in first]
        first = ()
    at = start + timedelta(seconds=fallback_seconds)
    for channel in fallbacks:
        later.append(due("fallback", cause, channel, at))
        events.append(_deferred(cause, channel, f"fallback: {channel} if unread at {at.isoformat()}", now))
    return RoutePlan(first, tuple(later), tuple(events))


def fallback_channels(channels: tuple[str, ...]) -> tuple[str, ...]:
    """Those of ``channels`` that wait for the fallback delay: their ``fallback_after`` channel
    (``engine.channels``: email after websocket) is requested too."""
    chain = REGISTRY.fallbacks
    return tuple(c for c in channels if chain.get(c) in channels)


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


def _cancelled(cause: Envelope, channel: str, reason: str, now: datetime) -> Envelope:
    accepted = accepted_event(cause)
    event = DeliveryCancelled(accepted.notification_id, accepted.user_id, channel, reason)
    return follow(cause, event, now=now, source=SOURCE)
