"""Schema migrations with Alembic, configured in code and run under a Postgres advisory lock.

The revisions live in ``projections/alembic/versions`` (``alembic_version`` records the
current one). ``migrate`` runs them on the caller's async engine, Postgres or SQLite, in
one transaction that first takes an advisory lock, so an API and a projector starting
together do not race. A database migrated by Herald's former hand-written ledger
(``schema_migrations``, versions 1 to 5) is adopted: stamped at the matching revision,
without re-running any DDL, and the old ledger dropped; read model tables that no migration
recorded are refused with the way out (``herald rebuild``). ``python -m projections.migrations
revision "what changes"`` writes a new revision from the difference between the models and
a database migrated to the head (``HERALD_DATABASE_URL``, a temporary SQLite file if unset).
"""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from projections.models import READ_MODELS, Base

_LOCK_KEY = 0x6865_7261_6C64  # "herald": one advisory lock for schema changes

SCRIPTS = Path(__file__).with_name("alembic")
"""Alembic's environment (``env.py``) and revisions (``versions/``)."""
VERSION_TABLE = "alembic_version"
"""Alembic's record of the revision a database is at."""
OLD_LEDGER = "schema_migrations"
"""The former ledger table (one row per applied version)."""
LEDGER_REVISIONS: tuple[str, ...] = ("v0001", "v0002", "v0003", "v0004", "v0005")
"""The revision matching each version of the former ledger (version 1 is ``v0001``...)."""


class MigrationError(RuntimeError):
    """The database is in a state the migrations cannot bring up to date safely."""


def config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, in code (no ``alembic.ini``); ``connection`` is the one to run on."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS).replace("%", "%%"))  # ini-style interpolation
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def current_revision(conn: Connection) -> str | None:
    """The revision the database is at (``None``: never migrated by Alembic)."""
    return MigrationContext.configure(conn).get_current_revision()


def _adopt_old_ledger(conn: Connection, cfg: Config) -> str | None:
    """Stamp a database of the former ledger at its matching revision; return that revision."""
    tables = inspect(conn)
    if tables.has_table(VERSION_TABLE):
        return None
    if not tables.has_table(OLD_LEDGER):
        unrecorded = sorted(set(READ_MODELS) & set(tables.get_table_names()))
        if unrecorded:
            raise MigrationError(
                f"read model tables exist ({', '.join(unrecorded)}) but no migration recorded them:"
                " `herald rebuild` (projector stopped) recreates them from the event log"
            )
        return None
    done = set(conn.execute(text(f"SELECT version FROM {OLD_LEDGER}")).scalars())  # noqa: S608 (constant)
    reached = 0
    while reached + 1 in done:
        reached += 1
    if max(done, default=0) > len(LEDGER_REVISIONS):
        raise MigrationError(
            f"{OLD_LEDGER} records version {max(done)}, newer than this Herald knows"
            f" ({len(LEDGER_REVISIONS)}): run the Herald that wrote it, or rebuild the read models"
        )
    revision = LEDGER_REVISIONS[reached - 1] if reached else None
    if revision is not None:
        command.stamp(cfg, revision)
    conn.execute(text(f"DROP TABLE {OLD_LEDGER}"))
    return revision


def _upgrade(conn: Connection) -> list[str]:
    cfg = config(conn)
    _adopt_old_ledger(conn, cfg)
    before = current_revision(conn)
    command.upgrade(cfg, "head")
    pending = ScriptDirectory.from_config(cfg).iterate_revisions("head", before or "base")
    return [script.revision for script in reversed(list(pending)) if script.revision != before]


async def _lock(conn: AsyncConnection) -> None:
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})


async def migrate(engine: AsyncEngine) -> list[str]:
    """Bring the schema to the newest revision; return the revisions applied now, oldest first."""
    async with engine.begin() as conn:
        await _lock(conn)
        return await conn.run_sync(_upgrade)


async def drop_read_models(engine: AsyncEngine) -> None:
    """Drop every read model and forget the migrations (rebuild starts from nothing)."""
    async with engine.begin() as conn:
        await _lock(conn)

        def drop(sync: Connection) -> None:
            tables = [Base.metadata.tables[name] for name in READ_MODELS]
            Base.metadata.drop_all(sync, tables=tables, checkfirst=True)
            for ledger in (VERSION_TABLE, OLD_LEDGER):
                sync.execute(text(f"DROP TABLE IF EXISTS {ledger}"))

        await conn.run_sync(drop)


def _next_id() -> str:
    """``v0006`` after ``v0005``: revisions are numbered in order."""
    head = ScriptDirectory.from_config(config()).get_current_head() or "v0000"
    return f"v{int(head.removeprefix('v')) + 1:04d}"


def _write_revision(message: str, url: str) -> None:
    """Autogenerate a revision: the models compared with a database migrated to the head."""
    import asyncio

    from projections.database import create_engine

    async def run() -> None:
        engine = create_engine(url)
        try:
            await migrate(engine)
            async with engine.begin() as conn:
                await conn.run_sync(lambda sync: command.revision(config(sync), message, True, rev_id=_next_id()))
        finally:
            await engine.dispose()

    asyncio.run(run())


def main(argv: list[str]) -> int:
    """``python -m projections.migrations revision MESSAGE``: write a new revision file."""
    import os
    import tempfile

    if len(argv) != 2 or argv[0] != "revision":
        sys.stderr.write('usage: python -m projections.migrations revision "what changes"\n')
        return 2
    url = os.environ.get("HERALD_DATABASE_URL")
    if url:
        _write_revision(argv[1], url)
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        _write_revision(argv[1], f"sqlite+aiosqlite:///{scratch}/herald.db")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
