"""Alembic's entry point: run the revisions on a connection, Postgres or SQLite.

``projections.migrations`` passes its open connection (inside its transaction, holding the
advisory lock) as ``config.attributes["connection"]``. Run by hand (``alembic`` with a
config whose ``script_location`` is this directory), it connects to ``sqlalchemy.url`` or
``HERALD_DATABASE_URL`` with the async engine. SQLite gets batch mode (``render_as_batch``):
it cannot alter most of a table in place, so Alembic copies the table instead.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import Connection

from projections.models import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_on_url(url: str) -> None:
    from projections.database import create_engine

    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


def _main() -> None:
    if context.is_offline_mode():
        raise SystemExit("Herald's migrations run online only (they inspect the database)")
    given = context.config.attributes.get("connection")
    if given is not None:
        _run(given)
        return
    url = context.config.get_main_option("sqlalchemy.url") or os.environ.get("HERALD_DATABASE_URL")
    if not url:
        raise SystemExit("set HERALD_DATABASE_URL (or sqlalchemy.url) to the database to migrate")
    asyncio.run(_run_on_url(url))


_main()
