"""Ordered schema migrations with a ledger table (Herald's small Alembic equivalent).

Each migration has a version, a name and an ``upgrade`` run inside one transaction;
``schema_migrations`` records which ran. ``migrate`` applies the missing ones in order
under a Postgres advisory lock, so an API and a projector starting together do not race.

Version 1 is the baseline: it creates the tables of ``projections.models`` that do not
exist. Later migrations must be written to be safe on a database the baseline created
from newer models (e.g. add a column only if it is missing: see ``add_column_if_missing``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, Connection, DateTime, Integer, MetaData, String, Table, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.models import READ_MODELS, Base, SkippedEventRow

_LOCK_KEY = 0x6865_7261_6C64  # "herald": one advisory lock for schema changes

ledger = Table(
    "schema_migrations",
    MetaData(),
    Column("version", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)
"""Which migrations ran, and when."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema change."""

    version: int
    name: str
    upgrade: Callable[[Connection], None]


def _baseline(conn: Connection) -> None:
    Base.metadata.create_all(conn)


def add_column_if_missing(conn: Connection, table: str, column: str, ddl_type: str) -> None:
    """``ALTER TABLE .. ADD COLUMN`` unless the column exists (for migrations after the baseline)."""
    if column not in {c["name"] for c in inspect(conn).get_columns(table)}:
        conn.execute(text(f'ALTER TABLE "{table}" ADD COLUMN "{column}" {ddl_type}'))


def _skipped_events(conn: Connection) -> None:
    Base.metadata.tables[SkippedEventRow.__tablename__].create(conn, checkfirst=True)


def _device_last_notification(conn: Connection) -> None:
    add_column_if_missing(conn, "devices", "last_notification_at", "TIMESTAMP WITH TIME ZONE")


def _deliveries_at_index(conn: Connection) -> None:
    conn.execute(text('CREATE INDEX IF NOT EXISTS "ix_deliveries_at" ON "deliveries" ("at")'))


def _contact_webhook_url(conn: Connection) -> None:
    add_column_if_missing(conn, "contacts", "webhook_url", "VARCHAR(2048)")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "baseline read models", _baseline),
    Migration(2, "skipped (poison) events", _skipped_events),
    Migration(3, "devices.last_notification_at", _device_last_notification),
    Migration(4, "deliveries by time (console overview)", _deliveries_at_index),
    Migration(5, "contacts.webhook_url (webhook channel)", _contact_webhook_url),
)
"""Every migration, in order."""


def _upgrade(conn: Connection) -> list[int]:
    ledger.create(conn, checkfirst=True)
    done = set(conn.execute(select(ledger.c.version)).scalars())
    applied = []
    for migration in MIGRATIONS:
        if migration.version in done:
            continue
        migration.upgrade(conn)
        conn.execute(
            ledger.insert().values(version=migration.version, name=migration.name, applied_at=datetime.now(UTC))
        )
        applied.append(migration.version)
    return applied


async def migrate(engine: AsyncEngine) -> list[int]:
    """Apply missing migrations; return the versions applied now."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        return await conn.run_sync(_upgrade)


async def drop_read_models(engine: AsyncEngine) -> None:
    """Drop every read model and forget the migrations (rebuild starts from nothing)."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})

        def drop(sync: Connection) -> None:
            tables = [Base.metadata.tables[name] for name in READ_MODELS]
            Base.metadata.drop_all(sync, tables=tables, checkfirst=True)
            ledger.drop(sync, checkfirst=True)

        await conn.run_sync(drop)
