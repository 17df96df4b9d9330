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

With ``processes`` above one (``herald rebuild --processes N``, on Postgres) the replay is
split between that many child processes, each replaying its own partitions of the log
(partitions share no rows the projector reads): one Python process per core instead of one
in all, the replay's bottleneck. The children start first (they import meanwhile); the parent
drops the models and indexes as above, sets the marker and lets them go; each child sums its
own counters and adds them when its partitions are done (one of them refreshes the planner
statistics as the tables grow);
the parent removes the marker only once every child succeeded. A child that fails or is
killed fails the rebuild (``RebuildFailed``) and the others are stopped; the marker stays.
The children connect with ``settings.database_url`` (not ``engine``, which cannot cross a
process boundary): an engine of another schema (``herald verify``) replays in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from aiokafka import AIOKafkaConsumer
from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.settings import Settings
from engine.topics import TopicNames
from projections.migrations import drop_read_models, migrate
from projections.models import READ_MODELS, Base, ProjectorOffset
from projections.poison import describe
from projections.projector import REBUILDING, Projector, _partitions
from projections.sql import insert_for
from schemas.errors import HeraldError

log = logging.getLogger(__name__)

UNSTABLE_COLUMNS = {("notifications", "seq")}
"""Columns a replay may legitimately number differently (arrival order across partitions)."""

CHILD_STOP_SECONDS = 10.0
"""How long a child of a parallel rebuild may take to die after SIGTERM before it is killed."""
POLL_SECONDS = 0.05
"""Interval at which the parent of a parallel rebuild reads its children's messages."""
MESSAGE_LIMIT = 2000
"""Characters of a failed child's error sent to the parent (a pipe message stays small)."""


class RebuildFailed(HeraldError):
    """A child of a parallel rebuild failed or died: the read models are incomplete (the
    ``REBUILDING`` marker stays, the projector refuses them) until ``herald rebuild`` runs again."""

    retriable = False


def default_processes() -> int:
    """Processes ``herald rebuild`` replays in by default: the CPUs this process may use
    (``rebuild`` caps them at the log's partitions)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


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
    processes: int = 1,
    child_setup: Callable[[], object] | None = None,
) -> int:
    """Drop the read models, recreate them and replay the whole event log; return events applied.

    ``progress(done, total)``: called as the replay advances (see ``Projector.catch_up``;
    with several processes, their sums).
    ``indexing(built, total)``: called as the secondary indexes are built again after the
    replay (first with ``built`` 0, then after each index).
    ``processes``: child processes the replay is split between, at most one per partition
    of the log (Postgres only; 1, or SQLite: this process replays it all, as before).
    ``child_setup()``: run first in each child process (the caller's logging configuration,
    say); it crosses to the child pickled (a module-level function, or a ``functools.partial``).
    """
    children: list[_Child] = []
    try:
        if processes > 1 and engine.dialect.name == "postgresql":
            shares = _split(sorted(await _log_partitions(settings)), processes)
            if len(shares) > 1:
                # Started first: they import and set up while the read models are dropped and recreated.
                children = _start(settings, shares, child_setup)
        await drop_read_models(engine)
        await migrate(engine)
        deferred = await _drop_secondary_indexes(engine)
        try:
            if children:
                return await _replay_in_processes(settings, engine, children, progress)
            return await Projector(settings, engine).catch_up(progress=progress, defer_stats=True)
        finally:
            await _create_indexes(engine, deferred, indexing)
    finally:
        await _stop(children)  # already stopped unless the rebuild failed before their replay


def _split(partitions: Sequence[int], processes: int) -> list[list[int]]:
    """``partitions`` dealt round-robin into at most ``processes`` non-empty shares."""
    n = max(1, min(processes, len(partitions)))
    return [list(partitions[i::n]) for i in range(n)]


async def _log_partitions(settings: Settings) -> set[int]:
    """The partitions of the event log (``TopicMissing`` if it does not exist)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    # Let the consumer's background task take its first step: stopped before that, aiokafka's
    # stop() awaits a task cancelled before it ran, and raises CancelledError.
    await asyncio.sleep(0)
    try:
        return await _partitions(consumer, TopicNames(settings.topic_prefix).events)
    finally:
        await consumer.stop()


@dataclass(slots=True)
class _Child:
    """One child of a parallel rebuild, as its parent follows it."""

    partitions: list[int]
    process: BaseProcess
    messages: Connection
    done: int = 0
    total: int = 0
    applied: int | None = None
    """Events it applied, once it said it finished."""
    error: str | None = None
    """What it said failed, if it did."""
    ended: bool = field(default=False)
    """Its end of the pipe closed (it exited or died)."""
    stopped: bool = field(default=False)
    """Awaited and its resources released (``_stop``)."""


def _start(settings: Settings, shares: list[list[int]], setup: Callable[[], object] | None) -> list[_Child]:
    """One child process per share (``_replay_share``), waiting for its go (``_replay_in_processes``)."""
    context = multiprocessing.get_context("spawn")  # no fork of a process with an event loop and connections
    children: list[_Child] = []
    try:
        for i, share in enumerate(shares):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_replay_share,
                args=(settings, share, theirs, setup, i == 0),  # the first refreshes the planner statistics
                name=f"herald-rebuild-{'-'.join(map(str, share))}",
                daemon=True,  # never outlives a parent that exits without stopping it
            )
            process.start()
            theirs.close()  # the child's end: closed here, its EOF tells the child is gone
            children.append(_Child(share, process, ours))
    except BaseException:
        for child in children:
            child.process.kill()
        raise
    log.info("replaying in processes", extra={"shares": shares, "pids": [c.process.pid for c in children]})
    return children


async def _replay_in_processes(
    settings: Settings,
    engine: AsyncEngine,
    children: list[_Child],
    progress: Callable[[int, int], None] | None,
) -> int:
    """Let the children replay their shares of the partitions; return events applied.

    The marker goes first and is removed only after every child finished its replay and wrote
    its counters. The first child that fails or dies raises ``RebuildFailed``; on any way out
    (that, a cancellation: Ctrl-C, SIGTERM) the children still running are stopped and awaited.
    """
    topic = TopicNames(settings.topic_prefix).events
    await _mark(engine, topic)
    try:
        for child in children:
            with contextlib.suppress(OSError):  # a child already gone: ``_follow`` says why
                child.messages.send(("go",))
        applied = await _follow(children, progress)
    finally:
        await _stop(children)
    await _unmark(engine, topic)
    return applied


async def _follow(children: list[_Child], progress: Callable[[int, int], None] | None) -> int:
    """Read the children's messages until every one finished; their summed progress goes to ``progress``."""
    while not all(c.ended for c in children):
        moved = False
        for child in children:
            while not child.ended:
                try:
                    if not child.messages.poll():
                        break
                    message = child.messages.recv()
                except (EOFError, OSError):  # its end closed: exited, or killed mid-message (a reset)
                    child.ended = True
                    break
                moved = True
                kind = message[0]
                if kind == "progress":
                    child.done, child.total = message[1], message[2]
                elif kind == "done":
                    child.applied = message[1]
                elif kind == "failed":
                    child.error = message[1]
            if child.ended:
                await _reap(child)
        if moved and progress is not None:
            progress(sum(c.done for c in children), sum(c.total for c in children))
        await asyncio.sleep(POLL_SECONDS)
    return sum(c.applied or 0 for c in children)


async def _reap(child: _Child) -> None:
    """Wait for a child whose pipe closed; ``RebuildFailed`` unless it said it finished and exited 0."""
    await asyncio.to_thread(child.process.join, CHILD_STOP_SECONDS)
    code = child.process.exitcode
    if code == 0 and child.applied is not None:
        return
    why = child.error or (f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}")
    raise RebuildFailed(f"the replay of partitions {child.partitions} (pid {child.process.pid}) failed: {why}")


async def _stop(children: list[_Child]) -> None:
    """Terminate the children still running (SIGTERM, then SIGKILL past ``CHILD_STOP_SECONDS``) and wait for all."""
    children = [c for c in children if not c.stopped]
    for child in children:
        if child.process.exitcode is None:
            child.process.terminate()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CHILD_STOP_SECONDS
    for child in children:
        await asyncio.to_thread(child.process.join, max(0.0, deadline - loop.time()))
    for child in children:
        if child.process.exitcode is None:
            child.process.kill()
        child.process.join()
        child.process.close()
        child.messages.close()
        child.stopped = True


def _replay_share(
    settings: Settings,
    partitions: list[int],
    messages: Connection,
    setup: Callable[[], object] | None,
    refresh_statistics: bool,
) -> None:
    """A child of a parallel rebuild: replay ``partitions``, reporting on ``messages``.

    It waits for the parent's ``("go",)`` (sent once the read models are recreated), then
    sends ``("progress", done, total)`` after each transaction and ``("done", applied)``, or
    ``("failed", error)`` and exits 1. Ctrl-C is its parent's to handle (it stops the
    children); a parent gone ends the wait for the go, or makes the next progress message
    fail, and the child with it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import uvloop

    try:
        if setup is not None:
            setup()
        if messages.recv() != ("go",):
            raise RebuildFailed("the parent of this replay did not say go")
        applied = uvloop.run(_replay_share_async(settings, partitions, messages, refresh_statistics))
    except BaseException as exc:
        log.exception("the replay of a share of the partitions failed", extra={"partitions": partitions})
        with contextlib.suppress(OSError):  # the parent is gone
            messages.send(("failed", describe(exc)[:MESSAGE_LIMIT]))
        raise SystemExit(1) from None
    messages.send(("done", applied))
    messages.close()


async def _replay_share_async(
    settings: Settings, partitions: list[int], messages: Connection, refresh_statistics: bool
) -> int:
    from projections.database import create_engine

    engine = create_engine(settings.database_url)
    try:
        projector = Projector(settings, engine)

        def report(done: int, total: int) -> None:
            messages.send(("progress", done, total))

        return await projector.catch_up(
            progress=report, partitions=partitions, rebuild_share=True, refresh_statistics=refresh_statistics
        )
    finally:
        await engine.dispose()


async def _mark(engine: AsyncEngine, topic: str) -> None:
    """Set the ``REBUILDING`` marker of ``topic`` (see ``Projector.catch_up``)."""
    async with engine.begin() as conn:
        values = {"topic": topic, "partition": REBUILDING, "next_offset": 0}
        await conn.execute(insert_for(conn, ProjectorOffset).values(**values).on_conflict_do_nothing())


async def _unmark(engine: AsyncEngine, topic: str) -> None:
    """Remove the ``REBUILDING`` marker: every counter is written."""
    async with engine.begin() as conn:
        o = ProjectorOffset
        await conn.execute(delete(o).where(o.topic == topic, o.partition == REBUILDING))


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
