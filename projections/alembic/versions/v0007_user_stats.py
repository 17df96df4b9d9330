"""user_stats: a user's fixed stat counters as the columns of one row, moved out of stat_counters.

The counters ``stat_counters`` held under a user's scope (``u:<user id>``) for the metrics
total, unread, status, priority and channel (four channels' eight states) become one
``user_stats`` row per user; the latency histogram, the global (``p:``) counters and any
other counter stay in ``stat_counters``. Existing counts are moved, not recomputed;
downgrade moves them back. Skipped when the table exists already (a baseline created from
today's models).

Revision ID: v0007
Revises: v0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "v0007"
down_revision = "v0006"
branch_labels = None
depends_on = None

_STATUSES = ("pending", "delivered", "failed", "expired", "cancelled", "rejected", "rate_limited", "duplicate")
_CHANNEL_STATES = ("pending", "deferred", "retrying", "delivered", "failed", "abandoned", "cancelled", "expired")
COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("total", "total", ""),
    ("unread", "unread", ""),
    *((f"status_{s}", "status", s) for s in _STATUSES),
    *((f"priority_{p}", "priority", p) for p in ("high", "medium", "low")),
    *((f"{c}_{s}", "channel", f"{c}.{s}") for c in ("websocket", "email", "apns", "webhook") for s in _CHANNEL_STATES),
)
"""``(column, metric, key)`` of each column, as of this revision (not imported: models move on)."""

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _columns() -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("user_id", sa.String(length=200), nullable=False),
        *(sa.Column(name, _BIGINT, nullable=False, server_default="0") for name, _, _ in COUNTERS),
        sa.PrimaryKeyConstraint("user_id"),
    ]


def _stat_counters() -> sa.Table:
    return sa.Table(
        "stat_counters",
        sa.MetaData(),
        sa.Column("scope", sa.String(length=210)),
        sa.Column("metric", sa.String(length=20)),
        sa.Column("key", sa.String(length=60)),
        sa.Column("count", _BIGINT),
    )


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("user_stats"):
        return
    users = op.create_table("user_stats", *_columns())
    counters = _stat_counters()
    c = counters.c
    moved = sa.and_(
        c.scope >= "u:",
        c.scope < "u;",
        sa.or_(*(sa.and_(c.metric == metric, c.key == key) for _, metric, key in COUNTERS)),
    )
    sums = [
        sa.func.coalesce(sa.func.sum(sa.case((sa.and_(c.metric == metric, c.key == key), c.count), else_=0)), 0)
        for _, metric, key in COUNTERS
    ]
    rows = sa.select(sa.func.substr(c.scope, 3), *sums).where(moved).group_by(c.scope)
    op.execute(users.insert().from_select(["user_id", *(name for name, _, _ in COUNTERS)], rows))
    op.execute(counters.delete().where(moved))


def downgrade() -> None:
    users = sa.Table("user_stats", sa.MetaData(), *_columns())
    counters = _stat_counters()
    for name, metric, key in COUNTERS:
        column = users.c[name]
        rows = sa.select(sa.literal("u:") + users.c.user_id, sa.literal(metric), sa.literal(key), column).where(
            column != 0
        )
        op.execute(counters.insert().from_select(["scope", "metric", "key", "count"], rows))
    op.drop_table("user_stats")
