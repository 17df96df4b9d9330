"""Read-model queries of the operator console (``/api/admin/``): across every user, by time.

``projections.queries`` answers one user's questions; an operator asks about everyone:
how many notifications were accepted and delivered per ten seconds, how long delivery
took, which notifications match a text, how far a user has used a rate window, how a
bulk send is doing. Every query here is bounded (a time window, a ``LIMIT``, or both),
runs on Postgres and on SQLite (``herald dev``), and reads nothing the caller must not
see: the API checks the admin scope before calling.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Integer, and_, cast, func, select, text, tuple_
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from engine.priority import ALL_CHANNELS
from projections.models import ChannelStateRow, DeliveryRow, EventRow, NotificationRow, ProjectorOffset
from projections.notifications import REFUSED
from projections.queries import ListFilter, Page, _conditions, decode_cursor, encode_cursor, view
from schemas.codec import format_time
from schemas.errors import HeraldError
from schemas.ids import derived_id

PRIORITIES = ("high", "medium", "low")
SQLITE_LATENCY_ROWS = 100_000
"""SQLite (``herald dev``) has no percentile function: latencies are read, at most this many."""
REFUSED_LISTED = 200
"""Refused targets one bulk's detail lists at most (the count is always exact)."""
STATEMENT_TIMEOUT_MS = 10_000
"""Longest one console query may run on Postgres (a search without a selective filter scans)."""
BULK_SCAN_ROUNDS = 5
"""Pages of correlation ids examined to fill one page of bulks (single sends share none)."""


class QueryTooSlow(HeraldError):
    """A console query ran past ``STATEMENT_TIMEOUT_MS`` and was cancelled by the database."""

    retriable = True


@dataclass(frozen=True, slots=True)
class Throughput:
    """Counts per bucket: accepted by priority, delivered and failed by channel and by priority."""

    accepted: dict[str, list[int]]
    delivered: dict[str, list[int]]
    failed: dict[str, list[int]]
    delivered_by_priority: dict[str, list[int]]
    failed_by_priority: dict[str, list[int]]


def _epoch(conn: AsyncConnection, column: Any) -> ColumnElement[int]:
    """Whole Unix seconds of a timestamp column, in the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return cast(func.floor(func.extract("epoch", column)), BigInteger)
    return cast(func.strftime("%s", column), Integer)


def _bucket(conn: AsyncConnection, column: Any, start: datetime, seconds: int) -> ColumnElement[int]:
    """Index of the ``seconds``-wide bucket, counted from ``start``, that ``column`` falls in."""
    offset = _epoch(conn, column) - int(start.timestamp())
    return offset // seconds


def nearest_rank(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile ``p`` (0-100) of sorted ``values``; ``None`` when empty."""
    if not values:
        return None
    return values[max(1, math.ceil(p / 100 * len(values))) - 1]


def is_bulk_member(notification_id: str, bulk_id: str, user_id: str, device_token: str | None) -> bool:
    """Whether the API's bulk send made this id (``api/rest/bulk.py`` derives it from the bulk id)."""
    return notification_id == derived_id(bulk_id, user_id, device_token or "")


class AdminQueries:
    """Queries of the read models for the operator console (any user)."""

    def __init__(self, engine: AsyncEngine, *, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS) -> None:
        self._engine = engine
        self._timeout_ms = statement_timeout_ms

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection whose statements Postgres cancels past the timeout (``QueryTooSlow``)."""
        async with self._engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text(f"SET LOCAL statement_timeout = {int(self._timeout_ms)}"))
            try:
                yield conn
            except DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) != "57014":  # query_canceled
                    raise
                raise QueryTooSlow(f"the query ran over {self._timeout_ms / 1000:g} s and was cancelled") from None

    async def throughput(self, start: datetime, end: datetime, bucket_seconds: int) -> Throughput:
        """Per ``bucket_seconds`` in [start, end): notifications accepted (by their ``created_at``),
        delivery attempts succeeded and failed (by the delivery event's time)."""
        count = math.ceil((end - start).total_seconds() / bucket_seconds)
        accepted = {p: [0] * count for p in PRIORITIES}
        delivered = {c: [0] * count for c in ALL_CHANNELS}
        failed = {c: [0] * count for c in ALL_CHANNELS}
        delivered_by_priority = {p: [0] * count for p in PRIORITIES}
        failed_by_priority = {p: [0] * count for p in PRIORITIES}
        n, d = NotificationRow, DeliveryRow
        async with self._connect() as conn:
            bucket = _bucket(conn, n.created_at, start, bucket_seconds).label("bucket")
            stmt = (
                select(bucket, n.priority, func.count())
                .where(n.created_at >= start, n.created_at < end, n.status.not_in(REFUSED))
                .group_by(bucket, n.priority)
            )
            for index, priority, number in await conn.execute(stmt):
                if priority in accepted and 0 <= index < count:
                    accepted[priority][index] += int(number)
            bucket = _bucket(conn, d.at, start, bucket_seconds).label("bucket")
            # Each attempt with its notification's priority (a delivery whose notification row is
            # gone, e.g. deleted, still counts by channel; by priority it has none).
            attempts = (
                select(bucket, d.channel, d.outcome, n.priority, func.count())
                .select_from(d)
                .outerjoin(n, n.id == d.notification_id)
                .where(d.at >= start, d.at < end, d.outcome.in_(("succeeded", "failed")))
                .group_by(bucket, d.channel, d.outcome, n.priority)
            )
            for index, channel, outcome, priority, number in await conn.execute(attempts):
                if not 0 <= index < count:
                    continue
                by_channel, by_priority = (
                    (delivered, delivered_by_priority) if outcome == "succeeded" else (failed, failed_by_priority)
                )
                if channel in by_channel:
                    by_channel[channel][index] += int(number)
                if priority in by_priority:
                    by_priority[priority][index] += int(number)
        return Throughput(
            accepted=accepted,
            delivered=delivered,
            failed=failed,
            delivered_by_priority=delivered_by_priority,
            failed_by_priority=failed_by_priority,
        )

    async def latency(self, start: datetime, end: datetime) -> dict[str, float | int | None]:
        """Milliseconds from request to first delivery of notifications created in [start, end)."""
        n = NotificationRow
        window = and_(n.created_at >= start, n.created_at < end, n.delivered_at.is_not(None))
        async with self._connect() as conn:
            if conn.dialect.name == "postgresql":
                ms = func.extract("epoch", n.delivered_at - n.created_at) * 1000
                stmt = select(
                    func.count(),
                    *(func.percentile_disc(p / 100).within_group(ms) for p in (50, 90, 99)),
                ).where(window)
                row = (await conn.execute(stmt)).one()
                total, p50, p90, p99 = int(row[0]), row[1], row[2], row[3]
                values = [None if v is None else round(float(v), 3) for v in (p50, p90, p99)]
            else:
                ms = (func.julianday(n.delivered_at) - func.julianday(n.created_at)) * 86_400_000
                stmt = select(ms).where(window).order_by(ms).limit(SQLITE_LATENCY_ROWS)
                sample = [max(0.0, float(v)) for v in (await conn.execute(stmt)).scalars()]
                total = len(sample)
                values = [None if (v := nearest_rank(sample, p)) is None else round(v, 3) for p in (50, 90, 99)]
        return {"p50": values[0], "p90": values[1], "p99": values[2], "count": total}

    async def projected_positions(self, topic: str) -> dict[int, int]:
        """Next offset the projector will apply, per partition of ``topic`` (committed with its rows)."""
        o = ProjectorOffset
        async with self._connect() as conn:
            rows = await conn.execute(select(o.partition, o.next_offset).where(o.topic == topic))
            return {int(p): int(x) for p, x in rows}

    async def search(
        self, user_id: str | None, text: str | None, filters: ListFilter, *, limit: int, cursor: str | None
    ) -> Page:
        """Any user's notifications, newest first, filtered like the user API plus a text search.

        ``text`` matches title or body, case-insensitively, as a plain substring (``%`` and
        ``_`` are literal). ``BadCursor`` for a cursor this API did not issue.
        """
        n = NotificationRow
        where = _conditions(user_id, filters)
        if text is not None:
            where.append(n.title.icontains(text, autoescape=True) | n.body.icontains(text, autoescape=True))
        if cursor is not None:
            created_at, nid = decode_cursor(cursor)
            where.append(tuple_(n.created_at, n.id) < tuple_(created_at, nid))
        stmt = select(n).where(and_(*where)).order_by(n.created_at.desc(), n.id.desc()).limit(limit + 1)
        async with self._connect() as conn:
            rows = (await conn.execute(stmt)).all()
            page = rows[:limit]
            states = await _channel_states(conn, [r.id for r in page])
        items = [view(r, states.get(r.id)) for r in page]
        last = page[-1] if page else None
        next_cursor = encode_cursor(last.created_at, last.id) if last is not None and len(rows) > limit else None
        return Page(items=items, next_cursor=next_cursor)

    async def targets(self, notification_id: str) -> list[dict[str, Any]]:
        """Where the notification stands on each of its channels (``notification_channels``)."""
        c = ChannelStateRow
        async with self._connect() as conn:
            rows = (await conn.execute(select(c).where(c.notification_id == notification_id).order_by(c.channel))).all()
        return [
            {
                "channel": r.channel,
                "state": r.state,
                "target": r.target,
                "attempts": r.attempts,
                "error": r.error,
                "provider_id": r.provider_id,
                "delivered_at": _time(r.delivered_at),
                "next_attempt_at": _time(r.next_attempt_at),
                "updated_at": _time(r.updated_at),
            }
            for r in rows
        ]

    async def rate_window_use(self, user_id: str, since: datetime) -> dict[str, int]:
        """Notifications of ``user_id`` accepted since ``since``, per priority.

        What the rate limit counts: every admitted request, read or deleted since, but not
        the refused ones (rejected, rate limited, duplicate).
        """
        n = NotificationRow
        stmt = (
            select(n.priority, func.count())
            .where(n.user_id == user_id, n.created_at > since, n.status.not_in(REFUSED))
            .group_by(n.priority)
        )
        out = dict.fromkeys(PRIORITIES, 0)
        async with self._connect() as conn:
            for priority, number in await conn.execute(stmt):
                out[str(priority)] = out.get(str(priority), 0) + int(number)
        return out

    async def bulks(self, limit: int) -> list[dict[str, Any]]:
        """The latest bulk sends (by their first notification), newest first.

        A bulk is a correlation id shared by several notifications, or the one notification
        a single-target API bulk made (its id is derived from the bulk id); a single send
        that carries its own correlation id is not a bulk.
        """
        n = NotificationRow
        first = func.min(n.created_at).label("first")
        groups = (
            select(n.correlation_id, first, func.count(), func.min(n.id), func.min(n.user_id), func.min(n.device_token))
            .where(n.correlation_id.is_not(None))
            .group_by(n.correlation_id)
            .order_by(first.desc(), n.correlation_id.desc())
        )
        found: list[tuple[str, datetime, int]] = []
        async with self._connect() as conn:
            for round_ in range(BULK_SCAN_ROUNDS):
                rows = (await conn.execute(groups.limit(limit * 4).offset(round_ * limit * 4))).all()
                for bulk_id, created, total, nid, user, token in rows:
                    if int(total) > 1 or is_bulk_member(str(nid), str(bulk_id), str(user), token):
                        found.append((str(bulk_id), created, int(total)))
                if len(found) >= limit or len(rows) < limit * 4:
                    break
            found = found[:limit]
            statuses = await _statuses(conn, [b for b, _, _ in found])
        return [
            {
                "bulk_id": bulk_id,
                "created_at": format_time(created),
                "total": total,
                "by_status": statuses.get(bulk_id, {}),
                "refused": sum(v for k, v in statuses.get(bulk_id, {}).items() if k in REFUSED),
            }
            for bulk_id, created, total in found
        ]

    async def bulk(self, bulk_id: str) -> dict[str, Any] | None:
        """One bulk: notifications by status and its refused targets (``None`` if none is projected).

        Refused targets are the bulk's requests ingest refused (rejected, rate limited,
        duplicate) and the targets the API refused before publishing (``bulk.target_refused``:
        rejected, with no user for an unknown device token), each with the reason recorded in
        the log; the target is the device token for a bulk by device, the user otherwise.
        """
        n = NotificationRow
        refused = (
            select(n.id, n.user_id, n.device_token, n.status, n.error)
            .where(n.correlation_id == bulk_id, n.status.in_(REFUSED))
            .order_by(n.created_at, n.id)
            .limit(REFUSED_LISTED)
        )
        async with self._connect() as conn:
            by_status = (await _statuses(conn, [bulk_id])).get(bulk_id)
            if not by_status:
                return None
            created = (await conn.execute(select(func.min(n.created_at)).where(n.correlation_id == bulk_id))).scalar()
            listed = [
                {
                    "notification_id": nid,
                    "target": token or user,
                    "user_id": user or None,
                    "status": status,
                    "reason": error or status,
                }
                for nid, user, token, status, error in await conn.execute(refused)
            ]
            # A user id too long for any request has no row column to keep it: its fact has it.
            await _refused_targets(conn, [item for item in listed if not item["target"]])
        return {
            "bulk_id": bulk_id,
            "created_at": _time(created),
            "total": sum(by_status.values()),
            "by_status": by_status,
            "refused_total": sum(v for k, v in by_status.items() if k in REFUSED),
            "refused": listed,
        }


async def _refused_targets(conn: AsyncConnection, items: list[dict[str, Any]]) -> None:
    """Fill in ``target`` of listed refusals from their ``bulk.target_refused`` (the ledger, by subject)."""
    if not items:
        return
    e = EventRow
    stmt = select(e.subject, e.data).where(
        e.subject.in_([item["notification_id"] for item in items]), e.type == "bulk.target_refused"
    )
    targets = {str(subject): data.get("target") for subject, data in await conn.execute(stmt) if isinstance(data, dict)}
    for item in items:
        target = targets.get(item["notification_id"])
        if isinstance(target, str):
            item["target"] = target


async def _statuses(conn: AsyncConnection, bulk_ids: list[str]) -> dict[str, dict[str, int]]:
    if not bulk_ids:
        return {}
    n = NotificationRow
    stmt = (
        select(n.correlation_id, n.status, func.count())
        .where(n.correlation_id.in_(bulk_ids))
        .group_by(n.correlation_id, n.status)
    )
    out: dict[str, dict[str, int]] = {}
    for bulk_id, status, number in await conn.execute(stmt):
        out.setdefault(str(bulk_id), {})[str(status)] = int(number)
    return out


async def _channel_states(conn: AsyncConnection, ids: list[str]) -> dict[str, dict[str, str]]:
    if not ids:
        return {}
    c = ChannelStateRow
    out: dict[str, dict[str, str]] = {}
    for nid, channel, state in await conn.execute(
        select(c.notification_id, c.channel, c.state).where(c.notification_id.in_(ids))
    ):
        out.setdefault(str(nid), {})[str(channel)] = str(state)
    return out


def _time(value: datetime | None) -> str | None:
    return format_time(value) if value is not None else None


__all__ = ["AdminQueries", "QueryTooSlow", "Throughput"]
