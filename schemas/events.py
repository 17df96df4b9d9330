"""Typed event classes, one per event type, in its current version.

Each class mirrors ``schemas/<type>/v<N>.json`` of its ``VERSION`` field for field (a
unit test proves it); older versions are read through the upcasters of
``schemas.versions``. Fields without a default are the schema's ``required`` list; the
rest carry the schema's default. Date-time fields are timezone-aware ``datetime`` objects.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, TypeVar

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event payload (the CloudEvents ``data``)."""

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1


@dataclass(frozen=True, slots=True)
class NotificationRequested(Event):
    """Command from a producer: notify ``user_id``."""

    TYPE: ClassVar[str] = "notification.requested"
    VERSION: ClassVar[int] = 2

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
    device_token: str | None = None
    email: str | None = None
    badge: int | None = None
    sound: str | None = None
    push_type: str | None = None


@dataclass(frozen=True, slots=True)
class NotificationAccepted(Event):
    """The request passed validation and policies; the notification exists."""

    TYPE: ClassVar[str] = "notification.accepted"
    VERSION: ClassVar[int] = 2

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
    device_token: str | None = None
    email: str | None = None
    badge: int | None = None
    sound: str | None = None
    push_type: str | None = None


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
    VERSION: ClassVar[int] = 2

    notification_id: str
    user_id: str
    channel: str
    reason: str


@dataclass(frozen=True, slots=True)
class DeliverySucceeded(Event):
    """A channel handed the notification to its target."""

    TYPE: ClassVar[str] = "delivery.succeeded"
    VERSION: ClassVar[int] = 2

    notification_id: str
    user_id: str
    channel: str
    target: str
    latency_ms: float
    provider_id: str | None = None
    attempt: int = 1


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


@dataclass(frozen=True, slots=True)
class NotificationDuplicate(Event):
    """A repeated idempotency key (or event id) inside the dedupe window: not delivered again."""

    TYPE: ClassVar[str] = "notification.duplicate"

    notification_id: str
    user_id: str
    idempotency_key: str
    original_id: str


@dataclass(frozen=True, slots=True)
class NotificationRateLimited(Event):
    """The user's per-priority rate limit was exceeded: not delivered."""

    TYPE: ClassVar[str] = "notification.rate_limited"

    notification_id: str
    user_id: str
    priority: str
    limit: int
    window_seconds: int
    retry_after_seconds: float


@dataclass(frozen=True, slots=True)
class NotificationExpired(Event):
    """``expires_at`` passed before delivery; never delivered late."""

    TYPE: ClassVar[str] = "notification.expired"
    VERSION: ClassVar[int] = 2

    notification_id: str
    user_id: str
    expires_at: datetime
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryFailed(Event):
    """One delivery attempt failed; ``retriable`` says if another may succeed."""

    TYPE: ClassVar[str] = "delivery.failed"
    VERSION: ClassVar[int] = 2

    notification_id: str
    user_id: str
    channel: str
    target: str
    attempt: int
    retriable: bool
    error: str


@dataclass(frozen=True, slots=True)
class DeliveryRetryScheduled(Event):
    """A retry of a failed attempt is due at ``due_at``."""

    TYPE: ClassVar[str] = "delivery.retry_scheduled"
    VERSION: ClassVar[int] = 2

    notification_id: str
    user_id: str
    channel: str
    target: str
    attempt: int
    due_at: datetime
    delay_seconds: float


@dataclass(frozen=True, slots=True)
class DeliveryAbandoned(Event):
    """Attempts exhausted or permanent failure: given up and dead-lettered."""

    TYPE: ClassVar[str] = "delivery.abandoned"
    VERSION: ClassVar[int] = 2

    notification_id: str
    user_id: str
    channel: str
    target: str
    attempts: int
    error: str


@dataclass(frozen=True, slots=True)
class DeliveryCancelled(Event):
    """A pending fallback or retry was cancelled (e.g. read elsewhere)."""

    TYPE: ClassVar[str] = "delivery.cancelled"
    VERSION: ClassVar[int] = 2

    notification_id: str
    user_id: str
    channel: str
    reason: str


@dataclass(frozen=True, slots=True)
class NotificationRead(Event):
    """The user read the notification."""

    TYPE: ClassVar[str] = "notification.read"

    notification_id: str
    user_id: str
    via: str = "api"


@dataclass(frozen=True, slots=True)
class NotificationDeleted(Event):
    """The user deleted the notification."""

    TYPE: ClassVar[str] = "notification.deleted"

    notification_id: str
    user_id: str


@dataclass(frozen=True, slots=True)
class DeviceRegistered(Event):
    """A device token of a platform was registered (revives an earlier invalidation)."""

    TYPE: ClassVar[str] = "device.registered"
    VERSION: ClassVar[int] = 2

    user_id: str
    device_token: str
    platform: str = "ios"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceUnregistered(Event):
    """A device token was deactivated by the user or app."""

    TYPE: ClassVar[str] = "device.unregistered"
    VERSION: ClassVar[int] = 2

    user_id: str
    device_token: str
    platform: str = "ios"


@dataclass(frozen=True, slots=True)
class DeviceInvalidated(Event):
    """The platform's push service reported the token invalid (APNs 410 / BadDeviceToken); no longer targeted."""

    TYPE: ClassVar[str] = "device.invalidated"
    VERSION: ClassVar[int] = 2

    user_id: str
    device_token: str
    reason: str
    platform: str = "ios"
    invalid_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class ContactUpdated(Event):
    """A user's email address and channel preferences."""

    TYPE: ClassVar[str] = "contact.updated"
    VERSION: ClassVar[int] = 2

    user_id: str
    email: str | None = None
    channels: tuple[str, ...] = ("websocket", "email", "apns")
    email_fallback_minutes: int | None = None
    webhook_url: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryRequeued(Event):
    """An operator put a failed, abandoned or deferred delivery back to work (``herald redeliver``)."""

    TYPE: ClassVar[str] = "delivery.requeued"
    VERSION: ClassVar[int] = 2

    notification_id: str
    user_id: str
    channel: str
    operator: str
    reason: str
    previous_status: str
    target: str | None = None


@dataclass(frozen=True, slots=True)
class DeadletterRedriven(Event):
    """An operator produced a dead-lettered record to its source topic again (console re-drive)."""

    TYPE: ClassVar[str] = "deadletter.redriven"

    operator: str
    deadletter_topic: str
    deadletter_partition: int
    deadletter_offset: int
    source_topic: str
    reason: str
    redriven_partition: int
    redriven_offset: int
    source_partition: int | None = None
    source_offset: int | None = None
    request_id: str | None = None
    forced: bool = False


@dataclass(frozen=True, slots=True)
class BulkTargetRefused(Event):
    """The REST bulk send refused one target before publishing (e.g. an unknown device token)."""

    TYPE: ClassVar[str] = "bulk.target_refused"

    notification_id: str
    bulk_id: str
    target: str
    target_kind: str
    reason: str
    requested_by: str
    user_id: str | None = None


EVENT_TYPES.update(
    {
        cls.TYPE: cls
        for cls in (
            NotificationDuplicate,
            NotificationRateLimited,
            NotificationExpired,
            DeliveryFailed,
            DeliveryRetryScheduled,
            DeliveryAbandoned,
            DeliveryCancelled,
            NotificationRead,
            NotificationDeleted,
            DeviceRegistered,
            DeviceUnregistered,
            DeviceInvalidated,
            ContactUpdated,
            DeliveryRequeued,
            DeadletterRedriven,
            BulkTargetRefused,
        )
    }
)


def slot_init(cls: type[_T]) -> type[_T]:
    """``cls`` with its dataclass ``__init__`` replaced by one that sets each field through its slot.

    A frozen dataclass's generated ``__init__`` sets every field with ``object.__setattr__``
    (a lookup by name per field); the slot's member descriptor sets it directly, in about
    half the time (the projector's reader does the same: ``projections.reader._setters``).
    The worker builds several events and envelopes per notification. Same parameters,
    defaults and default factories, same objects; a class this does not fit (not a frozen
    slotted dataclass, a ``__post_init__``, a field outside ``__init__`` or keyword-only)
    keeps its own ``__init__``.
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or hasattr(cls, "__post_init__"):
        return cls
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if not fields or any(not f.init or f.kw_only for f in fields):
        return cls
    scope: dict[str, Any] = {"_FACTORY": _FACTORY}
    args, body = [], []
    for i, f in enumerate(fields):
        descriptor = inspect.getattr_static(cls, f.name, None)
        if type(descriptor) is not types.MemberDescriptorType:
            return cls
        scope[f"_s{i}"] = descriptor.__set__
        if f.default is not dataclasses.MISSING:
            scope[f"_d{i}"] = f.default
            args.append(f"{f.name}=_d{i}")
        elif f.default_factory is not dataclasses.MISSING:
            scope[f"_f{i}"] = f.default_factory
            args.append(f"{f.name}=_FACTORY")
            body.append(f"    if {f.name} is _FACTORY:\n        {f.name} = _f{i}()")
        else:
            args.append(f.name)
        body.append(f"    _s{i}(self, {f.name})")
    exec(f"def __init__(self, {', '.join(args)}):\n" + "\n".join(body), scope)  # noqa: S102 - the class's own field names
    init = scope["__init__"]
    original = cls.__init__  # type: ignore[misc]
    init.__code__ = init.__code__.replace(co_qualname=original.__qualname__)
    init.__qualname__, init.__module__ = original.__qualname__, original.__module__
    init.__annotations__ = dict(original.__annotations__)
    cls.__init__ = init  # type: ignore[misc,method-assign]
    return cls


_FACTORY: Any = getattr(dataclasses, "_HAS_DEFAULT_FACTORY", object())
"""A field's default in ``__init__``'s signature when it has a default factory (as the dataclass's own)."""

for _cls in EVENT_TYPES.values():
    slot_init(_cls)
