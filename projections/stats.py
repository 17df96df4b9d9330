"""The ``stat_counters`` and ``user_stats`` read models: additive counters and a latency histogram.

Counters are maintained as deltas (what a batch changed), so reading stats costs a
few dozen rows however many notifications exist. A user's fixed counters (``USER_COUNTERS``)
are the columns of one ``user_stats`` row; the global ones (per event-log partition), the
latency histogram and any counter without a column are ``stat_counters`` rows. Latency
percentiles come from a log-scale histogram with 5% wide buckets: an estimate within 2.5%
of the true value.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from projections.models import USER_COUNTERS, StatCounterRow, UserStatsRow
from projections.notifications import STATUSES
from projections.sql import insert_rows

GROWTH = 1.05
"""Ratio between a latency bucket's upper and lower bound."""
PERCENTILES = (50, 90, 95, 99)
"""Latency percentiles the stats endpoint reports."""

Key = tuple[str, str, str]
"""(scope, metric, key) of one counter."""


UserKey = tuple[str, int]
"""(user id, position in ``USER_COUNTERS``) of one counter of a ``user_stats`` row."""
USER_COLUMNS: dict[tuple[str, str], int] = {(metric, key): i for i, (_, metric, key) in enumerate(USER_COUNTERS)}
"""Position in a ``user_stats`` row of each ``(metric, key)`` that has a column."""
USER_WIDTH = len(USER_COUNTERS)
TOTAL = USER_COLUMNS[("total", "")]


@dataclass(slots=True)
class Deltas:
    """What a batch (or a rebuild, summed) moves: the counters of ``user_stats`` rows, and the others."""

    users: Counter[UserKey] = field(default_factory=Counter)
    """Deltas of user counters that have a ``user_stats`` column (sparse: only those that move)."""
    counters: Counter[Key] = field(default_factory=Counter)
    """Deltas of ``stat_counters`` rows."""

    def __len__(self) -> int:
        return len(self.users) + len(self.counters)

    def update(self, other: Deltas) -> None:
        """Add ``other``'s deltas to these."""
        self.users.update(other.users)
        self.counters.update(other.counters)

    def user_rows(self) -> list[tuple[Any, ...]]:
        """``(user id, *deltas in USER_COUNTERS order)`` of every user something moved for, by user
        id (a stable lock order)."""
        dense: dict[str, list[int]] = {}
        for (user, position), n in self.users.items():
            if n:
                row = dense.get(user)
                if row is None:
                    row = dense[user] = [0] * USER_WIDTH
                row[position] = n
        return [(user, *dense[user]) for user in sorted(dense)]

    def counter_rows(self) -> list[tuple[str, str, str, int]]:
        """``(scope, metric, key, delta)`` of the ``stat_counters`` rows that move, sorted (a stable lock order)."""
        return [(*key, n) for key, n in sorted(self.counters.items()) if n != 0]


def user_scope(user_id: str) -> str:
    """Counter scope of one user's figures."""
    return f"u:{user_id}"


def partition_scope(partition: int) -> str:
    """Counter scope of the global figures contributed by one event-log partition."""
    return f"p:{partition}"


def latency_bucket(latency_ms: float) -> int:
    """Histogram bucket of a latency: bucket ``i`` holds (GROWTH**(i-1), GROWTH**i] ms."""
    if latency_ms <= 1.0:
        return 0
    return max(1, math.ceil(math.log(latency_ms) / math.log(GROWTH) - 1e-9))


def bucket_estimate(bucket: int) -> float:
    """Representative latency of a bucket (geometric middle; 1 ms for the first)."""
    if bucket <= 0:
        return 1.0
    return float(GROWTH ** (bucket - 0.5))


def percentiles(histogram: Mapping[int, int]) -> dict[str, float | None]:
    """Nearest-rank percentiles (ms) estimated from a bucket -> count histogram."""
    total = sum(histogram.values())
    out: dict[str, float | None] = {}
    for p in PERCENTILES:
        if total == 0:
            out[f"p{p}"] = None
            continue
        rank = max(1, math.ceil(p / 100 * total))
        seen = 0
        for bucket in sorted(histogram):
            seen += histogram[bucket]
            if seen >= rank:
                out[f"p{p}"] = round(bucket_estimate(bucket), 3)
                break
    return out


async def add(conn: AsyncConnection, deltas: Counter[Key]) -> None:
    """Add ``deltas`` to the counters in one set-based upsert (sorted: a stable lock order)."""
    rows: list[dict[str, Any]] = [
        {"scope": scope, "metric": metric, "key": key, "count": n}
        for (scope, metric, key), n in sorted(deltas.items())
        if n != 0
    ]
    if not rows:
        return
    await insert_rows(
        conn,
        StatCounterRow,
        rows,
        lambda stmt: stmt.on_conflict_do_update(
            index_elements=["scope", "metric", "key"], set_={"count": StatCounterRow.count + stmt.excluded.count}
        ),
    )
    # A counter back at zero is removed, so the table's rows do not depend on how the log was batched.
    emptied = [{"b_scope": r["scope"], "b_metric": r["metric"], "b_key": r["key"]} for r in rows if r["count"] < 0]
    if emptied:
        await conn.execute(
            delete(StatCounterRow).where(
                StatCounterRow.scope == bindparam("b_scope"),
                StatCounterRow.metric == bindparam("b_metric"),
                StatCounterRow.key == bindparam("b_key"),
                StatCounterRow.count == 0,
            ),
            emptied,
        )


async def add_users(conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
    """Add ``(user id, *deltas)`` rows (see ``Deltas.user_rows``) to ``user_stats`` in one upsert;
    remove the rows left all zeros (only a falling ``total`` can leave one so)."""
    if not rows:
        return
    names = ["user_id", *(name for name, _, _ in USER_COUNTERS)]
    table = UserStatsRow.__table__
    await insert_rows(
        conn,
        UserStatsRow,
        [dict(zip(names, row, strict=True)) for row in rows],
        lambda stmt: stmt.on_conflict_do_update(
            index_elements=["user_id"], set_={n: table.c[n] + stmt.excluded[n] for n in names[1:]}
        ),
    )
    emptied = [row[0] for row in rows if row[1 + TOTAL] < 0]
    if emptied:
        await conn.execute(
            delete(UserStatsRow).where(
                table.c.user_id.in_(emptied), *(table.c[name] == 0 for name, _, _ in USER_COUNTERS)
            )
        )


@dataclass(frozen=True, slots=True)
class Stats:
    """What ``GET /api/notifications/stats`` returns."""

    total: int
    unread: int
    by_status: dict[str, int]
    by_priority: dict[str, int]
    by_channel: dict[str, dict[str, int]]
    latency_ms: dict[str, float | None]
    deliveries: int

    def as_json(self) -> dict[str, Any]:
        """The JSON body."""
        return {
            "total": self.total,
            "unread": self.unread,
            "by_status": self.by_status,
            "by_priority": self.by_priority,
            "by_channel": self.by_channel,
            "delivery_latency_ms": {**self.latency_ms, "count": self.deliveries},
        }


async def read(conn: AsyncConnection, *, user_id: str | None) -> Stats:
    """A user's stats, or the global ones (summed over partitions) when ``user_id`` is None."""
    # A range rather than LIKE 'p:%': it walks the primary-key index whatever the collation.
    scope_filter = (
        StatCounterRow.scope == user_scope(user_id)
        if user_id is not None
        else and_(StatCounterRow.scope >= "p:", StatCounterRow.scope < "p;")
    )
    stmt = (
        select(StatCounterRow.metric, StatCounterRow.key, func.sum(StatCounterRow.count))
        .where(scope_filter)
        .group_by(StatCounterRow.metric, StatCounterRow.key)
    )
    rows = [(str(m), str(k), int(n)) for m, k, n in await conn.execute(stmt)]
    if user_id is not None:
        table = UserStatsRow.__table__
        packed = (await conn.execute(select(table).where(table.c.user_id == user_id))).first()
        if packed is not None:
            rows.extend((metric, key, int(n)) for (_, metric, key), n in zip(USER_COUNTERS, packed[1:], strict=True))
    return summarise(rows)


def summarise(rows: Iterable[tuple[str, str, int]]) -> Stats:
    """Shape counter rows into ``Stats`` (zero counts left out, except the headline numbers)."""
    by_status = dict.fromkeys(STATUSES, 0)
    by_priority = {"high": 0, "medium": 0, "low": 0}
    by_channel: dict[str, dict[str, int]] = {}
    histogram: dict[int, int] = {}
    total = unread = 0
    for metric, key, n in rows:
        if metric == "total":
            total += n
        elif metric == "unread":
            unread += n
        elif metric == "status":
            by_status[key] = by_status.get(key, 0) + n
        elif metric == "priority":
            by_priority[key] = by_priority.get(key, 0) + n
        elif metric == "channel":
            channel, _, state = key.partition(".")
            if n:
                by_channel.setdefault(channel, {})[state] = n
        elif metric == "latency" and n:
            histogram[int(key)] = n
    return Stats(
        total=total,
        unread=unread,
        by_status=by_status,
        by_priority=by_priority,
        by_channel=by_channel,
        latency_ms=percentiles(histogram),
        deliveries=sum(histogram.values()),
    )
