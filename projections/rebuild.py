"""Rebuilding the read models from the event log, and a checksum to prove it worked.

``rebuild`` drops every read model, recreates the schema and replays ``herald.events``
from its first offset. Run it with the projector stopped (``herald rebuild``); a live
projector would otherwise resume from offsets that no longer exist and start over too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.settings import Settings
from projections.migrations import drop_read_models, migrate
from projections.models import READ_MODELS, Base
from projections.projector import Projector

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


async def rebuild(
    settings: Settings, engine: AsyncEngine, *, progress: Callable[[int, int], None] | None = None
) -> int:
    """Drop the read models, recreate them and replay the whole event log; return events applied.

    ``progress(done, total)``: called as the replay advances (see ``Projector.catch_up``).
    """
    await drop_read_models(engine)
    await migrate(engine)
    return await Projector(settings, engine).catch_up(progress=progress)
