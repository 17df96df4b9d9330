"""Poison events: events the projector cannot apply, skipped one by one and recorded.

One bad event must never stop the read models for everyone. Whatever makes an event
unappliable — a record that does not decode, a value longer than its column, an error
while folding it, a data error from the database — it is listed in ``skipped_events``
with its position and the reason, in the transaction that moves the offset past it;
counted in ``herald_projector_skipped_events_total``; and logged at ERROR. The events
around it are applied as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from sqlalchemy import String
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from projections.models import SkippedEventRow
from projections.sql import insert_for

log = logging.getLogger(__name__)

SKIPPED = Counter(
    "herald_projector_skipped_events_total",
    "Events the projector could not apply, recorded in skipped_events and skipped",
    ["stage"],
)
"""Skipped events by stage: ``decode``, ``apply`` (checks and fold) or ``storage`` (the database refused)."""

REASON_LIMIT = 1000
"""Longest reason kept (an error message can quote a whole value)."""

# SQLSTATE classes of errors caused by the values written, not by the database or the
# connection: 21 cardinality, 22 data exception (too long, bad JSON, out of range),
# 23 integrity, 54 program limit exceeded (e.g. nesting beyond the parser's stack).
_EVENT_FAULT_CLASSES = ("21", "22", "23", "54")


@dataclass(frozen=True, slots=True)
class Skipped:
    """One event the projector could not apply."""

    offset: int
    """Its offset in the partition."""
    event_id: str | None
    """Its id, if the record decoded that far."""
    event_type: str | None
    """Its CloudEvents type, if known."""
    stage: str
    """``decode``, ``apply`` or ``storage``."""
    reason: str
    """Why."""


def describe(exc: BaseException) -> str:
    """A bounded, one-line reason for ``exc``."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 3] + "..."


def is_event_fault(exc: BaseException) -> bool:
    """True if the database refused the values written (retrying the same event cannot help),
    false for lost connections, timeouts, locks and every other transient condition."""
    if not isinstance(exc, DBAPIError) or exc.connection_invalidated:
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate[:2] in _EVENT_FAULT_CLASSES
    # Raised by the driver itself (no SQLSTATE; SQLite has none at all): a value it could not
    # send or store is the event's fault, a lost connection or a locked database is not.
    return type(orig).__name__ in ("DataError", "IntegrityError", "ProgrammingError", "NotSupportedError")


_LIMITS: dict[str, tuple[tuple[str, int], ...]] = {}


def too_long(table: Any, row: Mapping[str, Any]) -> str | None:
    """Why ``row`` does not fit ``table`` (a string longer than its column), or ``None``.

    Postgres would refuse it too, but only for the whole batch; checked here, the one
    event at fault is skipped and the rest of the batch applied.
    """
    name = table.__tablename__
    limits = _LIMITS.get(name)
    if limits is None:
        limits = tuple(
            (c.name, int(c.type.length))
            for c in table.__table__.columns
            if isinstance(c.type, String) and c.type.length is not None
        )
        _LIMITS[name] = limits
    for column, limit in limits:
        value = row.get(column)
        if isinstance(value, str) and len(value) > limit:
            return f"{name}.{column} is {len(value)} characters long, longer than its limit of {limit}"
    return None


async def record(conn: AsyncConnection, topic: str, partition: int, skipped: Sequence[Skipped]) -> None:
    """List ``skipped`` in ``skipped_events`` (inside the caller's transaction)."""
    if not skipped:
        return
    rows = [
        {
            "topic": topic,
            "partition": partition,
            "offset": s.offset,
            "event_id": s.event_id,
            "event_type": s.event_type,
            "reason": s.reason,
        }
        for s in skipped
    ]
    stmt = insert_for(conn, SkippedEventRow)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["topic", "partition", "offset"],
            set_={k: getattr(stmt.excluded, k) for k in ("event_id", "event_type", "reason")},
        ),
        rows,
    )


def report(topic: str, partition: int, skipped: Sequence[Skipped]) -> None:
    """Log and count ``skipped``; called once their transaction committed, so a retried batch
    reports its skipped events once."""
    for s in skipped:
        SKIPPED.labels(stage=s.stage).inc()
        log.error(
            "event skipped: the projector cannot apply it",
            extra={
                "topic": topic,
                "partition": partition,
                "offset": s.offset,
                "event_id": s.event_id,
                "event_type": s.event_type,
                "stage": s.stage,
                "reason": s.reason,
            },
        )
