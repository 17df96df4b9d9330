"""Read side for the API: notifications with filters and keyset pagination, trails, stats.

Every method takes the user whose data it reads (``None`` only for an admin's global
view); nobody reads another user's rows through this class unless the API allowed it.
Deleted notifications are gone from every read.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from engine.channels import REGISTRY
from projections import stats
from projections.models import (
    ChannelStateRow,
    ContactRow,
    DeliveryRow,
    DeviceRow,
    EventRow,
    NotificationRow,
    ProjectorOffset,
)
from projections.notifications import CHANNEL_BITS
from schemas.codec import format_time, parse_time
from schemas.errors import HeraldError


class BadCursor(HeraldError):
    """A pagination cursor that this API did not issue."""


@dataclass(frozen=True, slots=True)
class Page:
    """One page of results and the cursor of the next page (``None`` at the end)."""

    items: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ListFilter:
    """Filters of ``GET /api/notifications`` (all optional, combined with AND)."""

    statuses: tuple[str, ...] = ()
    priorities: tuple[str, ...] = ()
    channel: str | None = None
    unread: bool | None = None
    since: datetime | None = None
    until: datetime | None = None
    device_token: str | None = None
    category: str | None = None
    bulk_id: str | None = None
    ids: tuple[str, ...] = field(default=())


def encode_cursor(created_at: datetime, notification_id: str) -> str:
    """Opaque keyset cursor: the (created_at, id) of the last item of a page."""
    raw = f"{format_time(created_at)}|{notification_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Inverse of ``encode_cursor``; ``BadCursor`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, nid = raw.partition("|")
        if not nid:
            raise ValueError("no id")
        return parse_time(when), nid
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("invalid cursor") from None


def view(row: NotificationRow | Any, channel_states: dict[str, str] | None = None) -> dict[str, Any]:
    """The client-facing JSON of a notification row (the keys of the live frame and more)."""
    return {
        "id": row.id,
        "user_id": row.user_id,
        "title": row.title,
        "body": row.body,
        "priority": row.priority,
        "channels": list(row.channels),
        "category": row.category,
        "data": row.data,
        "status": row.status,
        "channel_states": channel_states or {},
        "attempts": row.attempts,
        "error": row.error,
        "device_token": row.device_token,
        "bulk_id": row.correlation_id,
        "collapse_key": row.collapse_key,
        "created_at": format_time(row.created_at),
        "delivered_at": _time(row.delivered_at),
        "read_at": _time(row.read_at),
        "expires_at": _time(row.expires_at),
        "deliver_after": _time(row.deliver_after),
    }


def delivery_view(row: DeliveryRow | Any) -> dict[str, Any]:
    """JSON of one delivery event."""
    return {
        "id": row.event_id,
        "channel": row.channel,
        "outcome": row.outcome,
        "target": row.target,
        "attempt": row.attempt,
        "provider_id": row.provider_id,
        "error": row.error,
        "retriable": row.retriable,
        "latency_ms": row.latency_ms,
        "at": format_time(row.at),
    }


_INVALID_TOKEN_REASONS = ("BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic")


TARGET_STATUSES = ("pending", "queued", "sending", "sent", "failed", "invalid_token", "cancelled", "expired")
"""Every per-target status, in the order the API documents them."""
HANDED_OFF_CHANNELS = REGISTRY.handed_off
"""Channels whose first attempt per target is recorded only with its outcome (the sinks': every
channel of ``engine.channels`` but the live WebSocket)."""


def target_statuses(
    deliveries: list[dict[str, Any]],
    *,
    due: dict[str, datetime] | None = None,
    now: datetime | None = None,
    in_flight: Sequence[tuple[str, str | None, str]] = (),
) -> list[dict[str, Any]]:
    """Per channel and target, where delivery stands, from its delivery events in log order.

    The vocabulary is the push service's: ``pending`` (deferred, waiting), ``queued`` (a
    retry is scheduled), ``sending`` (an attempt is in flight: its time has come and its
    outcome is not on the log yet), ``sent``, ``failed``, ``invalid_token`` (APNs refused
    the device token), plus ``cancelled`` and ``expired``. ``due`` maps the event id of a
    ``retry_scheduled`` delivery to its due time: a retry due by ``now`` is ``sending``.
    ``in_flight``: (channel, target, since) of first attempts handed to a sink, not answered yet.
    """
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    retry_due: dict[tuple[str, str], datetime] = {}
    for channel, target, since in in_flight:
        latest[(channel, target or "")] = {
            "channel": channel,
            "target": target,
            "attempts": 0,
            "status": "sending",
            "provider_id": None,
            "error": None,
            "at": since,
        }
    for d in deliveries:
        if d["target"] is None and d["outcome"] not in ("deferred", "cancelled", "expired"):
            continue
        key = (d["channel"], d["target"] or "")
        entry = latest.setdefault(key, {"channel": d["channel"], "target": d["target"], "attempts": 0})
        entry["attempts"] = max(entry["attempts"], d["attempt"] or 0)
        error = d["error"] or ""
        status = {
            "succeeded": "sent",
            "retry_scheduled": "queued",
            "deferred": "pending",
            "abandoned": "failed",
            "cancelled": "cancelled",
            "expired": "expired",
        }.get(d["outcome"], "queued" if d["retriable"] else "failed")
        if status == "failed" and any(reason in error for reason in _INVALID_TOKEN_REASONS):
            status = "invalid_token"
        if (at := (due or {}).get(d["id"])) is not None:
            retry_due[key] = at  # a retry's failure and schedule share a time: either may come last
        if entry.get("status") == "sent" and status != "sent":
            continue  # a late event never un-sends a target
        entry.update(
            status=status, provider_id=d["provider_id"] or entry.get("provider_id"), error=d["error"], at=d["at"]
        )
    for key, at in retry_due.items():
        if latest[key]["status"] == "queued" and now is not None and at <= now:
            latest[key]["status"] = "sending"  # the retry is due: handed to the sink, its outcome not recorded yet
    return list(latest.values())


def _first_attempts_in_flight(
    item: dict[str, Any], deliveries: list[dict[str, Any]]
) -> list[tuple[str, str | None, str]]:
    """(channel, target, since) of sink channels still ``pending`` with no delivery event yet.

    Routing handed such a channel to its sink at acceptance (a deferral or a cancellation
    would have been recorded), so its first attempt is under way. The target is the
    request's device token for APNs when it named one, else not known until the outcome.
    """
    seen = {d["channel"] for d in deliveries}
    out: list[tuple[str, str | None, str]] = []
    for channel, state in sorted(item["channel_states"].items()):
        if channel in HANDED_OFF_CHANNELS and state == "pending" and channel not in seen:
            out.append((channel, item["device_token"] if channel == "apns" else None, item["created_at"]))
    return out


def device_view(row: DeviceRow | Any) -> dict[str, Any]:
    """JSON of one device."""
    return {
        "device_token": row.device_token,
        "user_id": row.user_id,
        "platform": row.platform,
        "name": row.name,
        "active": row.active,
        "status": row.status,
        "reason": row.reason,
        "registered_at": format_time(row.registered_at),
        "updated_at": format_time(row.updated_at),
        "last_notification_at": _time(row.last_notification_at),
    }


def _time(value: datetime | None) -> str | None:
    return format_time(value) if value is not None else None


def _conditions(user_id: str | None, f: ListFilter) -> list[ColumnElement[bool]]:
    n = NotificationRow
    where: list[ColumnElement[bool]] = [n.deleted_at.is_(None)]
    if user_id is not None:
        where.append(n.user_id == user_id)
    if f.statuses:
        where.append(n.status.in_(f.statuses))
    if f.priorities:
        where.append(n.priority.in_(f.priorities))
    if f.channel is not None:
        where.append(n.channel_mask.op("&")(CHANNEL_BITS[f.channel]) != 0)
    if f.unread is True:
        where.append(n.read_at.is_(None))
    elif f.unread is False:
        where.append(n.read_at.is_not(None))
    if f.since is not None:
        where.append(n.created_at >= f.since)
    if f.until is not None:
        where.append(n.created_at < f.until)
    if f.category is not None:
        where.append(n.category == f.category)
    if f.bulk_id is not None:
        where.append(n.correlation_id == f.bulk_id)
    if f.device_token is not None:
        sent_to = exists().where(DeliveryRow.notification_id == n.id, DeliveryRow.target == f.device_token)
        where.append(or_(n.device_token == f.device_token, sent_to))
    return where


class NotificationQueries:
    """Queries of the read models, scoped by user."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @contextlib.asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[AsyncConnection]:
        """A connection whose reads all see one snapshot (REPEATABLE READ on Postgres).

        An answer built from several statements (a page, then its channel states; a
        notification, its channel states, then its deliveries; the stats' counter rows, then
        the packed user row) must not show half of a projector batch committed between two
        of them, as READ COMMITTED would (each statement its own snapshot). Read-only: no
        serialization failure can occur. SQLite (the embedded default) reads as before.
        """
        async with self._engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            yield conn

    async def page(
        self, user_id: str | None, *, limit: int = 50, cursor: str | None = None, filters: ListFilter = ListFilter()
    ) -> Page:
        """Newest first (by ``created_at``, then id); ``cursor`` continues a previous page.

        Keyset pagination: items arriving while a client pages never shift the pages it
        has not read yet, so nothing is skipped or repeated.
        """
        n = NotificationRow
        where = _conditions(user_id, filters)
        if cursor is not None:
            created_at, nid = decode_cursor(cursor)
            where.append(tuple_(n.created_at, n.id) < tuple_(created_at, nid))
        stmt = select(n).where(and_(*where)).order_by(n.created_at.desc(), n.id.desc()).limit(limit + 1)
        async with self._snapshot() as conn:
            rows = (await conn.execute(stmt)).all()
            page = rows[:limit]
            states = await self._channel_states(conn, [r.id for r in page])
        items = [view(r, states.get(r.id)) for r in page]
        last = page[-1] if page else None
        next_cursor = encode_cursor(last.created_at, last.id) if last is not None and len(rows) > limit else None
        return Page(items=items, next_cursor=next_cursor)

    async def _channel_states(self, conn: Any, ids: list[str]) -> dict[str, dict[str, str]]:
        if not ids:
            return {}
        c = ChannelStateRow
        out: dict[str, dict[str, str]] = {}
        for nid, channel, state in await conn.execute(
            select(c.notification_id, c.channel, c.state).where(c.notification_id.in_(ids))
        ):
            out.setdefault(nid, {})[channel] = state
        return out

    async def get(
        self, user_id: str | None, notification_id: str, *, deliveries: bool = False
    ) -> dict[str, Any] | None:
        """The notification if it exists, is not deleted *and* belongs to ``user_id``; else ``None``."""
        n = NotificationRow
        where = [n.id == notification_id, n.deleted_at.is_(None)]
        if user_id is not None:
            where.append(n.user_id == user_id)
        async with self._snapshot() as conn:
            row = (await conn.execute(select(n).where(*where))).first()
            if row is None:
                return None
            item = view(row, (await self._channel_states(conn, [row.id])).get(row.id))
            if deliveries:
                stmt = select(DeliveryRow).where(DeliveryRow.notification_id == notification_id)
                rows = (await conn.execute(stmt.order_by(DeliveryRow.at, DeliveryRow.event_id))).all()
                item["deliveries"] = [delivery_view(d) for d in rows]
                due = await self._retries_due(conn, notification_id)
                in_flight = _first_attempts_in_flight(item, item["deliveries"])
                item["targets"] = target_statuses(
                    item["deliveries"], due=due, now=datetime.now(UTC), in_flight=in_flight
                )
        return item

    async def _retries_due(self, conn: Any, notification_id: str) -> dict[str, datetime]:
        """Due time of each ``delivery.retry_scheduled`` of a notification, by event id (from the ledger)."""
        e = EventRow
        stmt = select(e.event_id, e.data).where(e.subject == notification_id, e.type == "delivery.retry_scheduled")
        out: dict[str, datetime] = {}
        for event_id, data in await conn.execute(stmt):
            value = data.get("due_at") if isinstance(data, dict) else None
            if isinstance(value, str):
                out[str(event_id)] = parse_time(value)
        return out

    async def events(self, notification_id: str) -> list[dict[str, Any]]:
        """The event trail of a notification, in log order (check access with ``get`` first)."""
        e = EventRow
        stmt = select(e).where(e.subject == notification_id).order_by(e.partition, e.offset)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            {
                "id": r.event_id,
                "type": r.type,
                "time": format_time(r.time),
                "source": r.source,
                "correlation_id": r.correlation_id,
                "partition": r.partition,
                "offset": r.offset,
                "data": r.data,
            }
            for r in rows
        ]

    async def unread_ids(self, user_id: str, *, limit: int) -> list[str]:
        """Ids of up to ``limit`` unread, undeleted notifications of a user (oldest first)."""
        n = NotificationRow
        stmt = (
            select(n.id)
            .where(n.user_id == user_id, n.read_at.is_(None), n.deleted_at.is_(None))
            .order_by(n.created_at, n.id)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [str(i) for i in (await conn.execute(stmt)).scalars()]

    async def exists(self, notification_id: str) -> bool:
        """Whether the projector has seen the notification at all (any user, even deleted)."""
        async with self._engine.connect() as conn:
            row = await conn.execute(select(NotificationRow.id).where(NotificationRow.id == notification_id))
            return row.first() is not None

    async def stats(self, user_id: str | None) -> stats.Stats:
        """A user's stats, or the global ones for ``None``."""
        async with self._snapshot() as conn:  # counter rows, then the packed user row
            return await stats.read(conn, user_id=user_id)

    async def bulk_summary(self, bulk_id: str) -> dict[str, int]:
        """Notifications of a bulk send that the projector has seen, by status."""
        n = NotificationRow
        stmt = select(n.status, func.count()).where(n.correlation_id == bulk_id).group_by(n.status)
        async with self._engine.connect() as conn:
            return {str(s): int(c) for s, c in await conn.execute(stmt)}

    async def devices(self, user_id: str, *, active_only: bool = False) -> list[dict[str, Any]]:
        """A user's devices."""
        d = DeviceRow
        stmt = select(d).where(d.user_id == user_id)
        if active_only:
            stmt = stmt.where(d.active.is_(True))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt.order_by(d.registered_at, d.device_token))).all()
        return [device_view(r) for r in rows]

    async def device_owners(self, tokens: list[str], platform: str = "ios") -> dict[str, tuple[str, bool]]:
        """Owner and active flag of each known token of ``platform`` (a device is its platform and token)."""
        out: dict[str, tuple[str, bool]] = {}
        async with self._engine.connect() as conn:
            for start in range(0, len(tokens), 1000):
                chunk = tokens[start : start + 1000]
                stmt = select(DeviceRow.device_token, DeviceRow.user_id, DeviceRow.active).where(
                    DeviceRow.platform == platform, DeviceRow.device_token.in_(chunk)
                )
                for token, user, active in await conn.execute(stmt):
                    out[str(token)] = (str(user), bool(active))
        return out

    async def contact(self, user_id: str) -> dict[str, Any] | None:
        """A user's contact details and channel preferences."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(ContactRow).where(ContactRow.user_id == user_id))).first()
        if row is None:
            return None
        return {
            "user_id": row.user_id,
            "email": row.email,
            "channels": list(row.channels),
            "email_fallback_minutes": row.email_fallback_minutes,
            "webhook_url": row.webhook_url,
            "updated_at": format_time(row.updated_at),
        }

    async def projected_offset(self, topic: str, partition: int) -> int:
        """Next offset the projector will apply on a partition of ``topic`` (0 if none yet)."""
        stmt = select(ProjectorOffset.next_offset).where(
            ProjectorOffset.topic == topic, ProjectorOffset.partition == partition
        )
        async with self._engine.connect() as conn:
            value = (await conn.execute(stmt)).scalar_one_or_none()
        return int(value) if value is not None else 0

    async def ping(self) -> None:
        """Raise if the database is unreachable."""
        async with self._engine.connect() as conn:
            await conn.execute(select(1))
