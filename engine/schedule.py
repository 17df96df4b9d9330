"""Delayed delivery work: what is due when, per user, and what cancels it.

Scheduled deliveries (``deliver_after``), email fallbacks and retries all become a
``Due`` item in the user's ``Agenda``. Items fire when due; a read or a delete of
the notification cancels its items, including items that arrive after the cancel
(a retry scheduled by an attempt that was already in flight). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

Kind = Literal["deliver", "fallback", "retry"]

CANCELLING_TYPES: dict[str, str] = {"notification.read": "read", "notification.deleted": "deleted"}
"""Event types that cancel a notification's pending work, and the reason each gives."""


def cancel_command(cause: dict[str, Any], reason: str) -> dict[str, Any]:
    """The ``cancel`` command for the scheduler's topic, caused by ``cause`` (a structured
    CloudEvent of a read or delete): drop the notification's pending work, now and later."""
    return {"op": "cancel", "notification_id": cause.get("subject"), "reason": reason, "cause": cause}


@dataclass(frozen=True, slots=True)
class Due:
    """One delivery to hand to a channel's sink at ``due_at``."""

    kind: Kind
    """``deliver`` (deliver_after), ``fallback`` (email if unread) or ``retry``."""
    notification_id: str
    """Notification to deliver."""
    channel: str
    """Channel whose sink gets the work."""
    due_at: float
    """When (Unix seconds)."""
    accepted: dict[str, Any]
    """The ``notification.accepted`` CloudEvent (structured JSON object)."""
    attempt: int = 1
    """Attempt number the work carries (retries count up from 2)."""
    target: str | None = None
    """The one target to retry, or ``None`` for every target of the channel."""

    @property
    def key(self) -> str:
        """Identity of the item: scheduling it twice keeps one."""
        return f"{self.notification_id}/{self.channel}/{self.kind}/{self.attempt}/{self.target or ''}"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "kind": self.kind,
            "notification_id": self.notification_id,
            "channel": self.channel,
            "due_at": self.due_at,
            "accepted": self.accepted,
            "attempt": self.attempt,
            "target": self.target,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Due:
        """Inverse of ``to_json``."""
        return cls(
            kind=raw["kind"],
            notification_id=raw["notification_id"],
            channel=raw["channel"],
            due_at=float(raw["due_at"]),
            accepted=raw["accepted"],
            attempt=int(raw.get("attempt", 1)),
            target=raw.get("target"),
        )


@dataclass(frozen=True, slots=True)
class Agenda:
    """A user's pending items, and recently cancelled notifications (id -> (cancel time, reason))."""

    items: tuple[Due, ...] = ()
    cancelled: dict[str, tuple[float, str]] = field(default_factory=dict)
    partition: int | None = None
    """Partition the user's work lives on (lets a tick for one partition find its users)."""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (the table value)."""
        cancelled = {k: [at, why] for k, (at, why) in self.cancelled.items()}
        return {"items": [i.to_json() for i in self.items], "cancelled": cancelled, "partition": self.partition}

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> Agenda:
        """Inverse of ``to_json``."""
        if not raw:
            return cls()
        return cls(
            tuple(Due.from_json(i) for i in raw.get("items", ())),
            {k: (float(v[0]), str(v[1])) for k, v in raw.get("cancelled", {}).items()},
            raw.get("partition"),
        )

    @property
    def empty(self) -> bool:
        """Nothing pending and nothing to remember."""
        return not self.items and not self.cancelled


def add(agenda: Agenda, item: Due, *, now: float, memory_seconds: float) -> tuple[Agenda, str | None]:
    """``agenda`` with ``item``, or without it and the reason if its notification was cancelled."""
    agenda = _forget(agenda, now, memory_seconds)
    if item.notification_id in agenda.cancelled:
        return agenda, agenda.cancelled[item.notification_id][1]
    if any(i.key == item.key for i in agenda.items):
        return agenda, None
    return replace(agenda, items=(*agenda.items, item)), None


def cancel(
    agenda: Agenda, notification_id: str, reason: str, *, now: float, memory_seconds: float
) -> tuple[Agenda, tuple[Due, ...]]:
    """``agenda`` without ``notification_id``'s items (returned), remembering the cancel and why."""
    agenda = _forget(agenda, now, memory_seconds)
    removed = tuple(i for i in agenda.items if i.notification_id == notification_id)
    kept = tuple(i for i in agenda.items if i.notification_id != notification_id)
    first = agenda.cancelled.get(notification_id, (now, reason))
    return replace(agenda, items=kept, cancelled={**agenda.cancelled, notification_id: first}), removed


def take_due(agenda: Agenda, *, now: float, memory_seconds: float) -> tuple[Agenda, tuple[Due, ...]]:
    """``agenda`` without the items due at ``now`` (returned, earliest first)."""
    agenda = _forget(agenda, now, memory_seconds)
    due = tuple(sorted((i for i in agenda.items if i.due_at <= now), key=lambda i: (i.due_at, i.key)))
    if not due:
        return agenda, ()
    return replace(agenda, items=tuple(i for i in agenda.items if i.due_at > now)), due


def next_due(agenda: Agenda) -> float | None:
    """When the earliest item is due, if any."""
    return min((i.due_at for i in agenda.items), default=None)


def _forget(agenda: Agenda, now: float, memory_seconds: float) -> Agenda:
    # A cancel is remembered long enough to catch work still in flight, not forever.
    horizon = now - memory_seconds
    if all(at > horizon for at, _ in agenda.cancelled.values()):
        return agenda
    return replace(agenda, cancelled={k: v for k, v in agenda.cancelled.items() if v[0] > horizon})
