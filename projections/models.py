"""Read models (SQLAlchemy 2 typed mappings) and the projector's checkpoint table.

Every table here is derived from ``herald.events`` and can be dropped and rebuilt by
replaying the log (``herald rebuild``). Rows carry no value that replay cannot
reproduce, except ``notifications.seq``: a projection-order sequence kept for clients
that page by arrival order; it is left out of rebuild checksums.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Dialect,
    Float,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)
from sqlalchemy import DateTime as _DateTime
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

_BigInt = BigInteger().with_variant(Integer, "sqlite")


class DateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC instants on every backend (SQLite stores naive text otherwise)."""

    impl = _DateTime(timezone=True)
    cache_ok = True

    def __init__(self, timezone: bool = True) -> None:
        super().__init__()

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the read models")
        return value.astimezone(UTC) if dialect.name != "sqlite" else value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Metadata root of every read model."""


class NotificationRow(Base):
    """One notification as its recipient sees it, with its delivery summary."""

    __tablename__ = "notifications"

    seq: Mapped[int] = mapped_column(_BigInt, primary_key=True, autoincrement=True)
    """Projection-order sequence (arrival order in this database; not replay-stable)."""
    id: Mapped[str] = mapped_column(String(200), unique=True)
    user_id: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    priority: Mapped[str] = mapped_column(String(10))
    channels: Mapped[list[str]] = mapped_column(JSON)
    channel_mask: Mapped[int] = mapped_column(Integer, default=0)
    """Bit per requested channel (websocket 1, email 2, apns 4): an indexable-free filter."""
    category: Mapped[str] = mapped_column(String(100))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20))
    """pending, delivered, failed, expired, cancelled, rejected, rate_limited or duplicate."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    """Delivery attempts over all channels."""
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Why the request was refused or the last delivery failed."""
    device_token: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """The one APNs device the request targeted, if it named one."""
    correlation_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """Correlation id of the request (the bulk id for bulk sends)."""
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    collapse_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    deliver_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        Index("ix_notifications_user_seq", "user_id", "seq"),
        Index("ix_notifications_user_created", "user_id", "created_at", "id"),
        Index("ix_notifications_user_status_created", "user_id", "status", "created_at", "id"),
        Index("ix_notifications_created", "created_at", "id"),
        Index("ix_notifications_correlation", "correlation_id"),
    )


class ChannelStateRow(Base):
    """Where one notification stands on one channel."""

    __tablename__ = "notification_channels"

    notification_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    channel: Mapped[str] = mapped_column(String(20), primary_key=True)
    state: Mapped[str] = mapped_column(String(20))
    """pending, deferred, retrying, delivered, failed, abandoned, cancelled or expired."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    target: Mapped[str | None] = mapped_column(String(500), nullable=True)
    provider_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DeliveryRow(Base):
    """One delivery event: an attempt's outcome on one channel and target."""

    __tablename__ = "deliveries"

    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    notification_id: Mapped[str] = mapped_column(String(200))
    user_id: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(20))
    outcome: Mapped[str] = mapped_column(String(20))
    """succeeded, failed, retry_scheduled, deferred, abandoned, cancelled or expired."""
    target: Mapped[str | None] = mapped_column(String(500), nullable=True)
    attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)
    provider_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """apns-id, SMTP message id, gateway node."""
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    retriable: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_deliveries_notification", "notification_id", "at"),
        Index("ix_deliveries_target", "target", "notification_id"),
        Index("ix_deliveries_at", "at"),  # the console overview counts deliveries by time
    )


class DeviceRow(Base):
    """A device (platform and token: an APNs token is an ``ios`` one) and who owns it."""

    __tablename__ = "devices"

    device_token: Mapped[str] = mapped_column(String(200), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(200))
    platform: Mapped[str] = mapped_column(String(20), primary_key=True)
    """A platform a channel of the registry declares (``schemas.channels``); with the token, the row's key."""
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(20))
    """active, unregistered or invalid."""
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """Time of the event that last changed the row: a later event wins, an older one is ignored."""
    last_notification_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    """Time of the latest push the platform's channel delivered to this device on behalf of its owner
    (``delivery.succeeded``)."""

    __table_args__ = (
        PrimaryKeyConstraint("platform", "device_token", name="devices_pkey"),
        Index("ix_devices_user", "user_id", "device_token"),
    )


class ContactRow(Base):
    """A user's email address and channel preferences."""

    __tablename__ = "contacts"

    user_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    channels: Mapped[list[str]] = mapped_column(JSON)
    email_fallback_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StatCounterRow(Base):
    """Additive counters behind ``/api/notifications/stats``.

    ``scope`` is ``u:<user id>`` for a user's own figures or ``p:<partition>`` for the
    global ones (one set per event-log partition, so projector instances never contend).
    ``metric`` is ``status``, ``priority``, ``channel`` (key ``<channel>.<state>``),
    ``unread``, ``total`` or ``latency`` (key: histogram bucket index).
    """

    __tablename__ = "stat_counters"

    scope: Mapped[str] = mapped_column(String(210), primary_key=True)
    metric: Mapped[str] = mapped_column(String(20), primary_key=True)
    key: Mapped[str] = mapped_column(String(60), primary_key=True)
    count: Mapped[int] = mapped_column(_BigInt, default=0)


USER_STATUSES = ("pending", "delivered", "failed", "expired", "cancelled", "rejected", "rate_limited", "duplicate")
USER_PRIORITIES = ("high", "medium", "low")
USER_CHANNELS = ("websocket", "email", "apns", "webhook")
USER_CHANNEL_STATES = ("pending", "deferred", "retrying", "delivered", "failed", "abandoned", "cancelled", "expired")
USER_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("total", "total", ""),
    ("unread", "unread", ""),
    *((f"status_{s}", "status", s) for s in USER_STATUSES),
    *((f"priority_{p}", "priority", p) for p in USER_PRIORITIES),
    *((f"{c}_{s}", "channel", f"{c}.{s}") for c in USER_CHANNELS for s in USER_CHANNEL_STATES),
)
"""``(column, metric, key)`` of each counter of ``user_stats``, in column order. A literal
list, not the channel registry's: a counter without a column (a channel added later) is kept
in ``stat_counters`` under the user's scope, as every user counter was before ``v0007``."""


class UserStatsRow(Base):
    """A user's fixed counters behind ``/api/notifications/stats``, one row per user.

    The same figures ``stat_counters`` holds under the scope ``u:<user id>`` for the metrics
    of ``USER_COUNTERS``, packed into one row, so that a batch moves each of its users' figures
    with one upsert instead of one per counter. Every counter counts notifications that are
    not deleted, so ``total`` is 0 exactly when the row is all zeros: such a row is removed,
    and the rows do not depend on how the log was batched. The latency histogram (open-ended
    buckets) stays in ``stat_counters``.
    """

    __table__ = Table(
        "user_stats",
        Base.metadata,
        Column("user_id", String(200), primary_key=True),
        *(Column(name, _BigInt, nullable=False, server_default="0") for name, _, _ in USER_COUNTERS),
    )


class EventRow(Base):
    """Ledger of applied events: makes re-application a no-op and serves the audit trail."""

    __tablename__ = "projected_events"

    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    type: Mapped[str] = mapped_column(String(60))
    subject: Mapped[str | None] = mapped_column(String(200), nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    source: Mapped[str] = mapped_column(String(200))
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    correlation_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(_BigInt)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (Index("ix_projected_events_subject", "subject", "partition", "offset"),)


class ProjectorOffset(Base):
    """Next offset to apply per partition of the event log; written with the rows it covers."""

    __tablename__ = "projector_offsets"

    topic: Mapped[str] = mapped_column(String(250), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    next_offset: Mapped[int] = mapped_column(BigInteger)


class SkippedEventRow(Base):
    """An event the projector could not apply (a poison event), recorded where it sits in the log.

    Written in the transaction that moves the partition's offset past it, so every event is
    either applied or listed here, never neither. Ids are ``Text``: an over-long id is itself
    a reason to skip an event, and must still be recorded whole.
    """

    __tablename__ = "skipped_events"

    topic: Mapped[str] = mapped_column(String(250), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The event's id, when the record could be decoded that far."""
    event_type: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    """Why it could not be applied (the error, bounded in length)."""


READ_MODELS: tuple[str, ...] = (
    "notifications",
    "notification_channels",
    "deliveries",
    "devices",
    "contacts",
    "stat_counters",
    "user_stats",
    "projected_events",
    "projector_offsets",
    "skipped_events",
)
"""Tables a rebuild drops and replays (everything but the migration ledger)."""
