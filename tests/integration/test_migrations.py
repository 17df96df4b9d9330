"""Alembic migrations on Postgres and SQLite: they agree with the models, adopt the old ledger, do not race.

A fresh database migrated to the head is compared with ``projections.models`` by Alembic's
autogenerate (``compare_metadata``): any difference means a model changed without a
revision. A database of the former hand-written ledger (``schema_migrations``) is adopted
at its version without re-running DDL, and two processes starting together migrate once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.database import create_engine, migrate
from projections.migrations import (
    LEDGER_REVISIONS,
    OLD_LEDGER,
    VERSION_TABLE,
    MigrationError,
    config,
    drop_read_models,
)
from projections.models import READ_MODELS, Base
from tests.support.api import own_database

REVISIONS = (*LEDGER_REVISIONS, "v0006", "v0007")
"""Every revision in order: the former ledger's versions, then those added since."""
HEAD = REVISIONS[-1]


async def differences(engine: AsyncEngine) -> list[Any]:
    """What Alembic's autogenerate would write to bring the database to the models."""

    def compare(sync: Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata))

    async with engine.connect() as conn:
        return await conn.run_sync(compare)


async def state(engine: AsyncEngine) -> tuple[set[str], str | None]:
    """The tables of the database and the revision Alembic records."""

    def read(sync: Connection) -> tuple[set[str], str | None]:
        return set(inspect(sync).get_table_names()), MigrationContext.configure(sync).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(read)


async def old_ledger_database(engine: AsyncEngine, version: int, *, baseline_from_models: bool = False) -> None:
    """A database as the former ledger left it at ``version``: schema of that version, ledger rows 1..version.

    ``baseline_from_models``: the tables of today's models whatever the version (the old baseline
    created the tables of the models it shipped with, which may hold later migrations' columns).
    """
    if version == len(LEDGER_REVISIONS) or baseline_from_models:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)  # the old baseline: the models' tables, as they are
    else:
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.upgrade(config(sync), LEDGER_REVISIONS[version - 1]))
            await conn.execute(text(f"DROP TABLE {VERSION_TABLE}"))
    async with engine.begin() as conn:
        await conn.execute(
            text(
                f"CREATE TABLE {OLD_LEDGER} (version INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL,"
                " applied_at TIMESTAMP WITH TIME ZONE NOT NULL)"
            )
        )
        for n in range(1, version + 1):
            await conn.execute(
                text("INSERT INTO schema_migrations VALUES (:v, :name, :at)"),
                {"v": n, "name": f"migration {n}", "at": datetime.now(UTC)},
            )
        await conn.execute(
            text("INSERT INTO contacts (user_id, email, channels, updated_at) VALUES ('alice', 'a@x.org', '[]', :at)"),
            {"at": datetime.now(UTC)},
        )


async def test_a_fresh_database_gets_every_table_and_matches_the_models(empty: AsyncEngine) -> None:
    assert await migrate(empty) == list(REVISIONS)
    tables, revision = await state(empty)
    assert set(READ_MODELS) <= tables
    assert revision == HEAD
    assert await differences(empty) == []
    assert await migrate(empty) == []  # idempotent: every start runs it


async def test_a_database_of_the_old_ledger_is_adopted_without_rerunning_ddl(empty: AsyncEngine) -> None:
    await old_ledger_database(empty, version=5)
    # stamped, not re-created (the baseline would fail on existing tables); later revisions skip what exists
    assert await migrate(empty) == list(REVISIONS[len(LEDGER_REVISIONS) :])
    tables, revision = await state(empty)
    assert revision == HEAD
    assert OLD_LEDGER not in tables
    assert await differences(empty) == []
    async with empty.connect() as conn:
        assert (await conn.execute(text("SELECT email FROM contacts"))).scalars().all() == ["a@x.org"]


async def test_a_partly_migrated_old_ledger_database_gets_the_remaining_revisions(empty: AsyncEngine) -> None:
    await old_ledger_database(empty, version=3)
    assert await differences(empty) != []  # the comparison sees what the models have and the database lacks
    assert await migrate(empty) == ["v0004", "v0005", "v0006", "v0007"]
    tables, revision = await state(empty)
    assert (revision, OLD_LEDGER in tables) == (HEAD, False)
    assert await differences(empty) == []  # webhook_url and ix_deliveries_at were added
    async with empty.connect() as conn:
        assert (await conn.execute(text("SELECT user_id, webhook_url FROM contacts"))).all() == [("alice", None)]


async def test_revisions_after_the_baseline_skip_what_an_old_baseline_already_created(empty: AsyncEngine) -> None:
    await old_ledger_database(empty, version=1, baseline_from_models=True)
    assert await migrate(empty) == ["v0002", "v0003", "v0004", "v0005", "v0006", "v0007"]  # no "already exists" failure
    assert (await state(empty))[1] == HEAD
    assert await differences(empty) == []


async def test_an_old_ledger_newer_than_this_herald_is_refused_untouched(empty: AsyncEngine) -> None:
    await old_ledger_database(empty, version=5)
    async with empty.begin() as conn:
        await conn.execute(
            text("INSERT INTO schema_migrations VALUES (6, 'from the future', :at)"), {"at": datetime.now(UTC)}
        )
    with pytest.raises(MigrationError, match="version 6, newer than this Herald knows"):
        await migrate(empty)
    tables, revision = await state(empty)
    assert (revision, OLD_LEDGER in tables) == (None, True)


async def test_tables_no_migration_recorded_are_refused_with_the_way_out(empty: AsyncEngine) -> None:
    async with empty.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)  # tables made by hand, or by Herald before any ledger
    with pytest.raises(MigrationError, match="no migration recorded them: `herald rebuild`"):
        await migrate(empty)
    await drop_read_models(empty)  # what `herald rebuild` does first
    assert await migrate(empty) == list(REVISIONS)


async def test_an_api_and_a_projector_starting_together_migrate_once() -> None:
    with own_database("herald_migr") as url:
        api, projector = create_engine(url), create_engine(url)
        try:
            applied = await asyncio.wait_for(asyncio.gather(migrate(api), migrate(projector)), 60)
            assert sorted(applied) == [[], list(REVISIONS)]
            assert await differences(api) == []
        finally:
            await api.dispose()
            await projector.dispose()


async def test_devices_of_the_token_key_are_adopted_as_ios_and_keyed_by_platform_and_token(empty: AsyncEngine) -> None:
    async with empty.begin() as conn:
        await conn.run_sync(lambda sync: command.upgrade(config(sync), "v0005"))
        await conn.execute(
            text(
                "INSERT INTO devices (device_token, user_id, platform, active, status, registered_at, updated_at)"
                " VALUES ('ab12', 'alice', '', true, 'active', :at, :at)"
            ),
            {"at": datetime.now(UTC)},
        )
    assert await migrate(empty) == ["v0006", "v0007"]
    assert await differences(empty) == []
    async with empty.begin() as conn:
        rows = (await conn.execute(text("SELECT platform, device_token, user_id FROM devices"))).all()
        assert rows == [("ios", "ab12", "alice")]
        key = await conn.run_sync(lambda sync: inspect(sync).get_pk_constraint("devices")["constrained_columns"])
        assert key == ["platform", "device_token"]
        await conn.execute(  # the same token string on another platform is another device
            text(
                "INSERT INTO devices (device_token, user_id, platform, active, status, registered_at, updated_at)"
                " VALUES ('ab12', 'bob', 'testos', true, 'active', :at, :at)"
            ),
            {"at": datetime.now(UTC)},
        )
