"""Database engine creation and schema set-up (Postgres in production, SQLite in dev)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from projections import migrations


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url`` (``postgresql+psycopg://`` or ``sqlite+aiosqlite://``)."""
    if url.startswith("sqlite"):
        return create_async_engine(url, connect_args={"timeout": 30})
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


async def migrate(engine: AsyncEngine) -> list[str]:
    """Bring the schema up to date; return the revisions applied now (see ``projections.migrations``)."""
    return await migrations.migrate(engine)


def sessions(engine: AsyncEngine) -> async_sessionmaker:  # type: ignore[type-arg]
    """Session factory bound to ``engine``."""
    return async_sessionmaker(engine, expire_on_commit=False)
