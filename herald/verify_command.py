"""``herald verify [--swap]``: rebuild the read models from the log into a shadow schema and diff.

Postgres only. The shadow is ``herald_shadow`` in the same database: an engine whose
``search_path`` is that schema alone runs the projections' own public ``rebuild`` (drop,
migrate, replay), so the live tables are never touched by the replay. Then each read
model is compared (``table_checksums``; for a table that differs, its rows by primary key,
the first ``--show`` differences printed). ``--swap`` (projector stopped) brings the shadow
up to the end of the log and swaps it in: every read model table moves to
``herald_retired`` and the shadow's move to ``public`` in one transaction, so API readers
wait a few milliseconds on the lock and then read the rebuilt tables.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from engine.settings import Settings

SHADOW = "herald_shadow"
"""Schema the log is replayed into."""
RETIRED = "herald_retired"
"""Schema the replaced tables move to on ``--swap`` (dropped by the next swap)."""
MIGRATION_LEDGER = "alembic_version"
"""The migrations' own table (Alembic's): swapped with the read models so the schema state matches."""


class VerifyError(Exception):
    """A one-line reason ``herald verify`` cannot run."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``herald verify``."""
    cmd = sub.add_parser("verify", help="rebuild the read models into a shadow schema from the log and diff them")
    cmd.add_argument("--swap", action="store_true", help="promote the shadow (projector stopped; API keeps serving)")
    cmd.add_argument("--show", type=int, default=20, help="differing rows printed per table (default 20)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """0: identical (or swapped); 1: differences (or failure); one line on stderr for a failure."""
    from herald.audit_log import LogUnavailable

    try:
        return asyncio.run(_verify(settings, swap=args.swap, show=max(0, args.show)))
    except (VerifyError, LogUnavailable) as exc:
        sys.stderr.write(f"herald verify: {exc}\n")
        return 1


async def _verify(settings: Settings, *, swap: bool, show: int) -> int:
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.ext.asyncio import create_async_engine

    from herald.audit_progress import Bar
    from projections.database import create_engine
    from projections.rebuild import rebuild, table_checksums

    url = settings.database_url
    if not url.startswith("postgresql"):
        raise VerifyError("needs Postgres (the shadow is a schema of the same database); HERALD_DATABASE_URL is not")
    live = create_engine(url)
    shadow = create_async_engine(url, connect_args={"options": f"-c search_path={SHADOW}"})
    try:
        try:
            async with live.begin() as conn:
                await conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SHADOW}"))
        except OperationalError as exc:
            raise VerifyError(f"cannot reach the database ({type(exc.orig).__name__})") from None
        before = await _offsets(live)
        bar = Bar("replaying the log into the shadow schema", None)
        try:
            applied = await rebuild(settings, shadow, progress=bar.update)
        finally:
            bar.close()
        live_sums, shadow_sums = await table_checksums(live), await table_checksums(shadow)
        sys.stdout.write(f"replayed {applied} events into schema {SHADOW}\n")
        differing = [name for name in live_sums if live_sums[name] != shadow_sums.get(name)]
        for name in live_sums:
            if name in differing:
                sys.stdout.write(f"{name}: DIFFERS (live {live_sums[name]}, log {shadow_sums.get(name)})\n")
                for line in await _row_diff(live, shadow, name, show):
                    sys.stdout.write(f"  {line}\n")
            else:
                sys.stdout.write(f"{name}: identical ({live_sums[name].split(':')[0]} rows)\n")
        if not swap:
            if differing:
                sys.stdout.write(
                    f"{len(differing)} read model(s) differ from the log; `herald verify --swap` repairs\n"
                )
                return 1
            sys.stdout.write("the read models match the log\n")
            return 0
        if await _offsets(live) != before:
            raise VerifyError("the live projector is running (its offsets moved): stop it before --swap")
        from projections.projector import Projector

        caught = await Projector(settings, shadow).catch_up()
        await _swap(live)
        sys.stdout.write(
            f"swapped: the read models are the rebuilt ones ({caught} more events applied first);"
            f" the replaced tables are in schema {RETIRED}\n"
        )
        return 0
    finally:
        await shadow.dispose()
        await live.dispose()


async def _offsets(engine: Any) -> dict[tuple[str, int], int]:
    """The live projector's stored positions."""
    from sqlalchemy import text
    from sqlalchemy.exc import ProgrammingError

    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text('SELECT topic, "partition", next_offset FROM public.projector_offsets'))
            return {(str(t), int(p)): int(o) for t, p, o in rows}
    except ProgrammingError:
        return {}  # no read models yet


async def _row_diff(live: Any, shadow: Any, name: str, show: int) -> list[str]:
    """The first ``show`` rows that differ between the live table and the shadow one, by primary key."""
    from sqlalchemy import select

    from projections.models import Base
    from projections.rebuild import UNSTABLE_COLUMNS

    table = Base.metadata.tables[name]
    columns = [c for c in table.columns if (name, c.name) not in UNSTABLE_COLUMNS]
    keys = [c.name for c in table.primary_key.columns if (name, c.name) not in UNSTABLE_COLUMNS] or [
        c.name for c in table.columns if c.unique
    ]
    stmt = select(*columns)

    async def rows(engine: Any) -> dict[tuple[Any, ...], dict[str, Any]]:
        async with engine.connect() as conn:
            result = await conn.execute(stmt)
            out = {}
            for row in result:
                values = dict(row._mapping)
                out[tuple(values[k] for k in keys)] = values
            return out

    mine, theirs = await rows(live), await rows(shadow)
    lines: list[str] = []
    for key in sorted(set(mine) | set(theirs), key=repr):
        if len(lines) >= show:
            lines.append("... (more differences not shown; --show N)")
            break
        a, b = mine.get(key), theirs.get(key)
        label = ", ".join(f"{k}={v!r}" for k, v in zip(keys, key, strict=True))
        if a is None:
            lines.append(f"missing from the live table: {label}")
        elif b is None:
            lines.append(f"not in the log: {label}")
        elif a != b:
            changed = "; ".join(f"{c}: live {a[c]!r}, log {b[c]!r}" for c in a if a[c] != b[c])
            lines.append(f"{label}: {changed}")
    return lines


async def _swap(live: Any) -> None:
    """Move the live tables out and the shadow's in, in one transaction."""
    from sqlalchemy import text

    from projections.models import READ_MODELS

    names = [*READ_MODELS, MIGRATION_LEDGER]
    async with live.begin() as conn:
        await conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {RETIRED}"))
        for name in names:
            await conn.execute(text(f'DROP TABLE IF EXISTS {RETIRED}."{name}" CASCADE'))
        # Readers wait on these locks for the length of the renames, then see the new tables.
        await conn.execute(text(f"LOCK TABLE {', '.join(f'public.{n}' for n in names)} IN ACCESS EXCLUSIVE MODE"))
        for name in names:
            await conn.execute(text(f'ALTER TABLE public."{name}" SET SCHEMA {RETIRED}'))
        for name in names:
            await conn.execute(text(f'ALTER TABLE {SHADOW}."{name}" SET SCHEMA public'))
