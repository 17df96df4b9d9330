"""Typed event classes, one per event type and version.

Each class mirrors ``schemas/<type>/v<N>.json`` field for field (a unit test proves
it). Fields without a default are the schema's ``required`` list; the rest carry the
schema's default. Date-time fields are timezone-aware ``datetime`` objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event payload (the CloudEvents ``data``)."""

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1


@dataclass(frozen=True, slots=True)
class NotificationRequested(Event):
    """Command from a producer: notify ``user_id``."""

    TYPE: ClassVar[str] = "notification.requested"

    user_id: str
    title: str
    body: str = ""
    priority: str | None = None
    channels: tuple[str, ...] = ("websocket",)
    category: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    collapse_key: str | None = None
    expires_at: datetime | None = None
    deliver_after: datetime | None = None


@dataclass(frozen=True, slots=True)
class NotificationAccepted(Event):
    """The request passed validation and policies; the notification exists."""

    TYPE: ClassVar[str] = "notification.accepted"

    notification_id: str
    user_id: str
    title: str
    body: str
    priority: str
    channels: tuple[str, ...]
    category: str
    data: dict[str, Any]
    requested_at: datetime
    idempotency_key: str | None = None
    collapse_key: str | None = None
    expires_at: datetime | None = None
    deliver_after: datetime | None = None


@dataclass(frozen=True, slots=True)
class NotificationRejected(Event):
    """The request was invalid; ``reasons`` say why."""

    TYPE: ClassVar[str] = "notification.rejected"

    notification_id: str
    user_id: str
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DeliveryDeferred(Event):
    """A live delivery could not happen now (user offline); replayed on reconnect."""

    TYPE: ClassVar[str] = "delivery.deferred"

    notification_id: str
    user_id: str
    channel: str
    reason: str


@dataclass(frozen=True, slots=True)
class DeliverySucceeded(Event):
    """A channel handed the notification to its target."""

    TYPE: ClassVar[str] = "delivery.succeeded"

    notification_id: str
    user_id: str
    channel: str
    target: str
    latency_ms: float
    provider_id: str | None = None


EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        NotificationRequested,
        NotificationAccepted,
        NotificationRejected,
        DeliveryDeferred,
        DeliverySucceeded,
    )
}
"""Every known event class by CloudEvents ``type``."""
