"""Rebuilding the read models from the event log, and a checksum to prove it worked.

``rebuild`` drops every read model, recreates the schema and replays ``herald.events``
from its first offset. Run it with the projector stopped (``herald rebuild``); a live
projector would otherwise resume from offsets that no longer exist and start over too.

On Postgres the secondary indexes (those no write of the projector looks rows up by) are
dropped for the replay and built again after it, from their own definitions: one sort
per index instead of a random B-tree insert per row, which roughly halves Postgres's work
per event during the replay. They are rebuilt whether the replay ends or fails; a
rebuild killed outright leaves them missing until the next ``herald rebuild``.

The stat counters are summed in memory over the whole replay and written once at its end
(``Projector.catch_up(defer_stats=True)``): one row per counter instead of an upsert per
batch that moves it. A rebuild killed before that write leaves a marker the projector
refuses to start on (``projections.projector.UnfinishedRebuild``) until the next rebuild.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.settings import Settings
from projections.migrations import drop_read_models, migrate
from projections.models import READ_MODELS, Base
from projections.projector import Projector

log = logging.getLogger(__name__)

UNSTABLE_COLUMNS = {("notifications", "seq")}
"""Columns a replay may legitimately number differently (arrival order across partitions)."""


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return repr(round(value, 6))
    return value


async def table_checksums(engine: AsyncEngine) -> dict[str, str]:
    """SHA-256 per read model over its rows in primary-key order (unstable columns left out)."""
    out: dict[str, str] = {}
    async with engine.connect() as conn:
        for name in READ_MODELS:
            table = Base.metadata.tables[name]
            columns = [c for c in table.columns if (name, c.name) not in UNSTABLE_COLUMNS]
            keys = [c for c in table.primary_key.columns if (name, c.name) not in UNSTABLE_COLUMNS] or [
                c for c in table.columns if c.unique
            ]
            digest = hashlib.sha256()
            rows = await conn.execute(select(*columns).order_by(*keys))
            count = 0
            for row in rows:
                record = {c.name: _plain(v) for c, v in zip(columns, row, strict=True)}
                digest.update(json.dumps(record, sort_keys=True, default=str).encode())
                count += 1
            out[name] = f"{count}:{digest.hexdigest()}"
    return out


async def checksum(engine: AsyncEngine) -> str:
    """One checksum over every read model."""
    parts = await table_checksums(engine)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


async def fingerprint(engine: AsyncEngine) -> str:
    """One digest over every read model, computed where the rows are (what ``herald rebuild`` prints).

    On Postgres each table's digest is its row count and the sum of its rows' MD5s (order
    does not matter), computed by the database: seconds for millions of rows, where
    ``checksum`` reads every row into Python. Elsewhere it is ``checksum``. Compare
    fingerprints taken on the same backend only.
    """
    if engine.dialect.name != "postgresql":
        return await checksum(engine)
    parts: dict[str, str] = {}
    async with engine.connect() as conn:
        # Timestamps render in UTC whatever the session's time zone.
        await conn.execute(text("SET LOCAL TIME ZONE 'UTC'"))
        for name in READ_MODELS:
            table = Base.metadata.tables[name]
            columns = ", ".join(f'"{c.name}"' for c in table.columns if (name, c.name) not in UNSTABLE_COLUMNS)
            row_hash = f"('x' || substr(md5(ROW({columns})::text), 1, 15))::bit(60)::bigint"
            # Names from the models' own metadata, never from input.
            query = f"SELECT count(*), coalesce(sum({row_hash}), 0) FROM {name}"  # noqa: S608
            count, total = (await conn.execute(text(query))).one()
            parts[name] = f"{int(count)}:{int(total):x}"
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


SECONDARY_INDEXES = (
    "SELECT i.indexname, i.indexdef FROM pg_indexes AS i"
    " WHERE i.schemaname = current_schema() AND i.tablename = ANY(%s)"
    " AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conname = i.indexname)"
    " AND i.indexdef NOT LIKE 'CREATE UNIQUE %%'"
    " ORDER BY i.indexname"
)
"""Indexes of the read models that back no constraint and are not unique (primary keys and
unique columns stay: the projector's upserts and lookups use them)."""


async def rebuild(
    settings: Settings,
    engine: AsyncEngine,
    *,
    progress: Callable[[int, int], None] | None = None,
    indexing: Callable[[int, int], None] | None = None,
) -> int:
    """Drop the read models, recreate them and replay the whole event log; return events applied.

    ``progress(done, total)``: called as the replay advances (see ``Projector.catch_up``).
    ``indexing(built, total)``: called as the secondary indexes are built again after the
    replay (first with ``built`` 0, then after each index).
    """
    await drop_read_models(engine)
    await migrate(engine)
    deferred = await _drop_secondary_indexes(engine)
    try:
        return await Projector(settings, engine).catch_up(progress=progress, defer_stats=True)
    finally:
        await _create_indexes(engine, deferred, indexing)


async def _drop_secondary_indexes(engine: AsyncEngine) -> list[tuple[str, str]]:
    """Drop the read models' secondary indexes (Postgres); return ``(name, definition)`` of each."""
    if engine.dialect.name != "postgresql":
        return []
    async with engine.begin() as conn:
        rows: Any = await conn.exec_driver_sql(SECONDARY_INDEXES, (list(READ_MODELS),))  # typed as no columns
        deferred = [(str(name), str(definition)) for name, definition in rows]
        for name, _ in deferred:
            await conn.exec_driver_sql(f'DROP INDEX "{name}"')  # a name from the catalogue, not from input
    return deferred


async def _create_indexes(
    engine: AsyncEngine, deferred: list[tuple[str, str]], indexing: Callable[[int, int], None] | None
) -> None:
    """Build the dropped indexes again, each from its own definition, one transaction each."""
    if indexing is not None and deferred:
        indexing(0, len(deferred))
    for built, (name, definition) in enumerate(deferred, start=1):
        started = time.perf_counter()
        async with engine.begin() as conn:
            await conn.exec_driver_sql(definition)
        log.info("index built", extra={"index": name, "seconds": round(time.perf_counter() - started, 2)})
        if indexing is not None:
            indexing(built, len(deferred))
