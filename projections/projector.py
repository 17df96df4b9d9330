"""The projector: event log -> read models, offsets committed in the same transaction.

Offsets live in ``projector_offsets``, not in Kafka: on every partition assignment the
consumer seeks to the stored position, and a batch's rows and its new positions commit
together. A crash or a replay therefore never applies an event twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord
from sqlalchemy import delete, select, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from engine import gc_tuning
from engine.settings import Settings
from engine.topics import TopicNames
from projections import poison, stats
from projections.batch import Prepared, apply_prepared, prepare, writer_for
from projections.contiguity import Contiguity
from projections.models import ProjectorOffset, StatCounterRow, UserStatsRow
from projections.poison import Skipped, describe
from projections.reader import read_with_data
from projections.sql import insert_for
from schemas.errors import HeraldError

log = logging.getLogger(__name__)


ANALYZE_FIRST = 2_000
"""Events applied before the first refresh of the planner statistics (Postgres): a table the
planner believes empty is scanned whole for each batch's lookups, and that grows with every
batch until the refresh. Each later refresh waits for twice as many events (the tables have
about doubled), up to ``ANALYZE_EVERY``."""
ANALYZE_EVERY = 200_000
"""Most events applied between two refreshes of the planner statistics."""
ANALYZED = (
    ("notifications", ("id",)),
    ("notification_channels", ("notification_id", "channel")),
    ("projected_events", ("event_id",)),
    ("stat_counters", ("scope", "metric", "key")),
    ("user_stats", ("user_id",)),
)
"""What a refresh analyzes: the tables the projector reads or joins (its lookups by key, the
``UPDATE .. FROM unnest``, the removal of emptied counters), and only the key columns those
use. Sampling every column cost a fifth of Postgres's CPU per event of a 40,000-event backlog
(the ledger's JSON ``data``, the notifications' texts); ``deliveries`` the projector never reads.
An ANALYZE restricted to some columns leaves the others' statistics as they were and does not
reset the table's count of changes since its last analysis, so autovacuum still analyzes every
column on its own schedule (the API's queries)."""
ANALYZE_TARGET = 10
"""Statistics target of the projector's refreshes (Postgres's default is 100): a sample of 3,000
rows instead of 30,000. Its columns are unique keys and a channel name, whose statistics a
small sample gets right; what the refresh is for is the table's size and the plans it
invalidates. Autovacuum's own ANALYZE (the default target) follows on its schedule (see
``ANALYZED``). Measured: the refreshes' Postgres CPU 6.8 -> 2.9 us per event of a 38,861-event
backlog."""
ANALYZE = "ANALYZE " + ", ".join(f"{table} ({', '.join(columns)})" for table, columns in ANALYZED)
LINGER_THRESHOLD = 16
"""Records in one poll that count as a backlog worth lingering for (see ``Projector._gather``)."""
READ_AHEAD = 2
"""Polls read and prepared ahead of the one being applied."""
PREPARE_CHUNK = 100
"""Records prepared between two yields to the event loop."""
APPLY_CONCURRENCY = 4
"""Partitions of one poll applied at once, each in its own transaction and connection."""
CATCH_UP_BATCH = 2000
"""Events read per partition per poll when catching up (rebuilds): one transaction each, about."""
RETRY_FIRST_DELAY = 0.2
"""Seconds before the first retry of a transaction that lost its database connection."""
RETRY_MAX_DELAY = 5.0
"""Longest wait between two retries (the delay doubles up to it)."""
RETRY_HORIZON = 120.0
"""Seconds of failed retries after which the projector gives up and stops (the process exits
and is restarted): well inside Kafka's poll interval, well past a database failover."""

DEFERRED_STATS_LIMIT = 250_000
"""Distinct counters a rebuild sums in memory before writing them (``catch_up(defer_stats=True)``):
about 60 MB; a log with more counters than this (users x metrics) is written in several passes."""
REBUILDING = -1
"""``projector_offsets.partition`` of the row that marks a replay whose summed stat counters are
not written yet (see ``catch_up(defer_stats=True)``): no partition has this number."""

SPARE_SECONDS = 1.0
"""A connection a batch committed on is kept for the next batch if that comes within this many
seconds (``Projector._transaction``); an older one goes back to the pool, and the next batch
takes one from it (checked with a ping, as every checkout)."""

GC_YOUNG_THRESHOLD = 50_000
"""Allocations between two collections of the youngest generation while projecting (Python's
default is 700). The projector allocates a dozen short-lived objects per event, none in
reference cycles; with the default, collections and the promotions they cause took a third
of its CPU (measured: 57 -> 38 us per event)."""

T = TypeVar("T")


def _tune_gc() -> None:
    """Fewer garbage collections while projecting (``engine.gc_tuning``, ``GC_YOUNG_THRESHOLD``)."""
    gc_tuning.tune_gc(GC_YOUNG_THRESHOLD)


class TopicMissing(HeraldError):
    """The event log topic does not exist (nothing to project yet, or a wrong prefix)."""

    retriable = True


class UnfinishedRebuild(HeraldError):
    """A replay that summed stat counters in memory stopped before writing them: the read models
    are incomplete until ``herald rebuild`` runs again."""

    retriable = False


class Projector:
    """Consumes ``herald.events`` and keeps the read models up to date."""

    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        self._settings = settings
        self._engine = engine
        self._topic = TopicNames(settings.topic_prefix).events
        self._consumer: AIOKafkaConsumer | None = None
        self._gaps = Contiguity()
        self._positions: dict[int, int] = {}
        self._progress = asyncio.Condition()
        self.applied = 0
        """Events applied since start (for benchmarks and logs)."""
        self.skipped = 0
        """Events skipped since start because they could not be applied (see ``projections.poison``)."""
        self._since_analyze = 0
        self._analyze_at = ANALYZE_FIRST
        self._analyzing: asyncio.Task[None] | None = None
        """The refresh of the planner statistics in progress, if any (see ``_analyze_soon``)."""
        self._deferred: stats.Deltas | None = None
        """Counter deltas of committed transactions not written yet (a rebuild), else None."""
        self._no_counters = False
        """The stat tables are known to be empty (a rebuild's first write is then a plain insert)."""
        self._writing_counters = asyncio.Lock()
        self._outage: asyncio.Event | None = None
        """Set when the operation retrying through a database outage got through or gave up."""
        self._keeping = 0
        """How many ``_keeping_connections`` blocks are open (batches then keep their connections)."""
        self._spare: list[tuple[AsyncConnection, float]] = []
        """Connections kept from committed batches, with when each was last used."""

    async def run(self, stopping: asyncio.Event) -> None:
        """Project until ``stopping`` is set; any error that retries cannot cure propagates.

        Each partition has its own apply lane (``_Lanes``): its polled records, read and
        prepared (JSON, checks, row building: Python work), wait in its queue and are applied
        in order, one transaction at a time, while other partitions' lanes apply theirs, up
        to ``APPLY_CONCURRENCY`` transactions at once. So Postgres always has a transaction
        to work on while this process reads, prepares and folds the next: the two cores
        work at once instead of taking turns. A lane holds at most ``READ_AHEAD`` works
        waiting; the fetcher reads only the partitions whose lanes have room.
        """
        s = self._settings
        _tune_gc()
        await self._refuse_unfinished_rebuild()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            group_id=s.projector_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(s.kafka_session_timeout * 1000),
            heartbeat_interval_ms=int(s.kafka_heartbeat_interval * 1000),
            rebalance_timeout_ms=int(s.kafka_rebalance_timeout * 1000),
            max_poll_records=s.projector_batch_size,
            fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
        )
        self._consumer = consumer
        await consumer.start()
        consumer.subscribe([self._topic], listener=_SeekToStored(self))
        lanes = self._lanes()

        async def fetch() -> None:
            while True:
                assigned = consumer.assignment()
                room = [tp for tp in assigned if lanes.has_room(tp.partition)]
                if assigned and not room:
                    await lanes.space()
                    continue
                whole = len(room) == len(assigned)
                polled = self._contiguous(consumer, await self._gather(consumer, room, None if whole else lanes))
                await self._dispatch(polled, lanes)

        async with self._keeping_connections():
            fetcher = asyncio.create_task(fetch(), name="projector-fetch")
            stop = asyncio.create_task(stopping.wait(), name="projector-stopping")
            try:
                await lanes.watch(fetcher, stop)
                fetcher.cancel()  # stopping: read no more; the transactions in flight commit
                with contextlib.suppress(asyncio.CancelledError):
                    await fetcher
                await lanes.finish(drop_waiting=True)
            finally:
                stop.cancel()
                fetcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fetcher
                await lanes.cancel()
                await self._stop_analyzing()
                await consumer.stop()

    def _lanes(self, applied: Callable[[], None] | None = None, batch_size: int | None = None) -> _Lanes:
        """Apply lanes for this projector (one transaction at a time on SQLite: one writer);
        ``batch_size``: most events a lane's merged works hold (``_Lanes``; default the
        projector's batch size)."""
        concurrent = self._engine.dialect.name == "postgresql"

        async def apply(work: _Work) -> None:
            if self._analyzing is not None and self._analyzing.done():
                self._raise_analyze_failure()
            await self._apply_work(work)
            if applied is not None:
                applied()

        merge_up_to = batch_size or self._settings.projector_batch_size
        return _Lanes(apply, APPLY_CONCURRENCY if concurrent else 1, READ_AHEAD, merge_up_to)

    async def _dispatch(self, polled: dict[int, list[ConsumerRecord[bytes, bytes]]], lanes: _Lanes) -> None:
        """Read and prepare each partition's records (CPU only, no I/O) into its lane, yielding to
        the event loop between chunks so that the transactions in flight get their next
        statement out without waiting for the lot."""
        for partition, records in polled.items():
            work = _Work(partition, records[-1].offset + 1, [], [])
            for start in range(0, len(records), PREPARE_CHUNK):
                _prepare_into(work, records[start : start + PREPARE_CHUNK])
                await asyncio.sleep(0)
            lanes.put(work)

    async def _gather(
        self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition], lanes: _Lanes | None = None
    ) -> dict[int, list[ConsumerRecord[bytes, bytes]]]:
        """Records of ``partitions`` (all assigned ones if empty) by partition: what is there now,
        plus what arrives within the linger window, up to a batch per partition.

        A transaction costs about the same for 10 events as for 500, and brokers hand out a
        few record batches per fetch, so under load a short linger turns many small
        transactions into few large ones. Only a backlog lingers (a first poll of at least
        ``LINGER_THRESHOLD`` records): a lone write is projected at once, keeping
        read-your-writes fast. The consumer hands out one partition's buffered records
        before the next one's, so each partition still short of a batch is asked on its own;
        only partitions that have records but less than a batch are waited for.
        ``lanes``: some partitions were left out because their lanes were full; the wait for
        records ends early (with what was gathered) when one of those gets room.
        """
        s = self._settings
        size = s.projector_batch_size
        out: dict[int, list[ConsumerRecord[bytes, bytes]]] = {}
        batches = await _getmany(consumer, partitions, 200, size, lanes)
        if sum(len(r) for r in batches.values()) < LINGER_THRESHOLD:
            return {tp.partition: records for tp, records in batches.items()}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.projector_linger_ms / 1000
        wanted = partitions or list(consumer.assignment())
        while batches:
            for tp, records in batches.items():
                out.setdefault(tp.partition, []).extend(records)
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            batches = {}
            for tp in wanted:  # what is buffered already: no wait
                room = size - len(out.get(tp.partition, ()))
                if room > 0:
                    batches.update(await consumer.getmany(tp, timeout_ms=0, max_records=room))
            if batches:
                continue
            # Linger only for the partitions that have records but less than a batch.
            short = [tp for tp in wanted if 0 < len(out.get(tp.partition, ())) < size]
            if not short:
                break
            room = min(size - len(out[tp.partition]) for tp in short)
            batches = await _getmany(consumer, short, int(remaining * 1000), room, lanes)
        return out

    def _contiguous(
        self, consumer: AIOKafkaConsumer, polled: dict[int, list[ConsumerRecord[bytes, bytes]]]
    ) -> dict[int, list[ConsumerRecord[bytes, bytes]]]:
        """Only gap-free runs of each partition; a skipped offset is sought and read again."""
        out = {}
        for partition, records in polled.items():
            kept, reread_from = self._gaps.admit(partition, records)
            if reread_from is not None:
                consumer.seek(TopicPartition(self._topic, partition), reread_from)
            if kept:
                out[partition] = kept
        return out

    async def stored_offsets(self) -> dict[int, int]:
        """Next offset to apply per partition, as committed in the database."""
        return await self._retrying(self._read_offsets)

    async def _read_offsets(self) -> dict[int, int]:
        async with self._engine.connect() as conn:
            stmt = select(ProjectorOffset.partition, ProjectorOffset.next_offset)
            rows = await conn.execute(stmt.where(ProjectorOffset.topic == self._topic))
            return {int(p): int(o) for p, o in rows}

    async def apply_records(self, partition: int, records: Iterable[ConsumerRecord[bytes, bytes]]) -> None:
        """Apply ``records`` of one partition and advance its checkpoint, in one transaction.

        An event that cannot be applied is skipped and recorded (``projections.poison``);
        when the database refuses the batch as a whole, its events are applied one per
        transaction to find the one at fault. A lost connection is retried with backoff.
        """
        records = list(records)
        if records:
            await self._apply_work(self._prepare_records(partition, records))

    def _prepare_records(self, partition: int, records: list[ConsumerRecord[bytes, bytes]]) -> _Work:
        """Read and check every record (CPU only, no I/O): prepared events and skipped ones."""
        work = _Work(partition, records[-1].offset + 1, [], [])
        _prepare_into(work, records)
        return work

    async def _apply_work(self, work: _Work) -> None:
        await self._retrying(lambda: self._apply_isolating(work))

    async def _apply_isolating(self, work: _Work) -> None:
        try:
            await self._apply(work.partition, work.prepared, work.skipped, work.next_offset)
        except Exception as exc:
            if _transient(exc):
                raise
            log.warning(
                "the database refused a batch; applying its events one by one to find the one at fault",
                extra={"partition": work.partition, "next_offset": work.next_offset, "error": describe(exc)},
            )
            await self._apply_one_by_one(work)

    async def _apply_one_by_one(self, work: _Work) -> None:
        items: list[Prepared | Skipped] = [*work.prepared, *work.skipped]
        for item in sorted(items, key=lambda i: i.offset):
            if isinstance(item, Skipped):
                await self._apply(work.partition, [], [item], item.offset + 1)
                continue
            try:
                await self._apply(work.partition, [item], [], item.offset + 1)
            except Exception as exc:
                if _transient(exc):
                    raise
                stage = "storage" if isinstance(exc, DBAPIError) else "apply"
                refused = Skipped(item.offset, item.env.id, item.env.type, stage, describe(exc))
                await self._apply(work.partition, [], [refused], item.offset + 1)

    async def _retrying(self, operation: Callable[[], Awaitable[T]]) -> T:
        """``operation``, retried with backoff while the database is unreachable (one log line per attempt).

        Each attempt is a whole transaction that either committed or did not: the retry
        re-reads the stored offset, so nothing is lost or applied twice. Past
        ``RETRY_HORIZON`` seconds the error propagates and the projector stops (loudly).
        One outage has one sequence of retries: the first operation to find the database
        unreachable retries with backoff; the others (the other partitions' lanes) wait for
        it to get through or give up, then try again themselves (``_outage``).
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        delay = RETRY_FIRST_DELAY
        attempt = 0
        mine: asyncio.Event | None = None
        try:
            while True:
                try:
                    return await operation()
                except Exception as exc:
                    if not _transient(exc):
                        raise
                    if mine is None and self._outage is not None:
                        await self._outage.wait()  # another operation is retrying: its outcome first
                        continue
                    if mine is None:
                        mine = self._outage = asyncio.Event()
                    attempt += 1
                    waited = loop.time() - started
                    if waited + delay > RETRY_HORIZON:
                        log.error(
                            "database unreachable; giving up",
                            extra={"attempt": attempt, "waited_seconds": round(waited, 1), "error": describe(exc)},
                        )
                        raise
                    log.warning(
                        "database unreachable; retrying",
                        extra={"attempt": attempt, "retry_in_seconds": delay, "error": describe(exc)},
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_DELAY)
        finally:
            if mine is not None:
                mine.set()
                if self._outage is mine:
                    self._outage = None

    @contextlib.asynccontextmanager
    async def _keeping_connections(self) -> AsyncIterator[None]:
        """Within this block, a batch's connection is kept for the next one (``_transaction``);
        the kept ones go back to the pool at its end."""
        self._keeping += 1
        try:
            yield
        finally:
            self._keeping -= 1
            if not self._keeping:
                spare, self._spare = self._spare, []
                for conn, _ in spare:
                    with contextlib.suppress(Exception):
                        await conn.close()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        """A transaction for one batch, on a connection kept from an earlier batch when there is
        a recent one (``SPARE_SECONDS``): a checkout from the pool costs a ping (a transaction
        and ``SELECT 1``, two round trips) and a reset at check-in, per batch, on both sides of
        the connection. A connection whose transaction failed goes back to the pool (which
        throws it away if it is broken)."""
        if not self._keeping:
            async with self._engine.begin() as pooled:
                yield pooled
            return
        loop = asyncio.get_running_loop()
        found: AsyncConnection | None = None
        while self._spare and found is None:
            kept, used = self._spare.pop()
            if loop.time() - used <= SPARE_SECONDS:
                found = kept
            else:
                with contextlib.suppress(Exception):
                    await kept.close()
        conn = found or await self._engine.connect()
        try:
            async with conn.begin():
                yield conn
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.close()
            raise
        if self._keeping:
            self._spare.append((conn, loop.time()))
        else:
            await conn.close()

    async def _apply(self, partition: int, batch: list[Prepared], skipped: list[Skipped], next_offset: int) -> None:
        sink = None if self._deferred is None else stats.Deltas()
        async with self._transaction() as conn:
            writer = await writer_for(conn, deferred=True)
            stored = await writer.claim_offset(self._topic, partition)
            # Positions below the checkpoint were applied (or skipped) before a crash or rebalance.
            fresh = await apply_prepared(conn, partition, [p for p in batch if p.offset >= stored], writer, sink)
            skipped = [s for s in skipped if s.offset >= stored]
            if skipped:
                await writer.flush()  # the batch's rows before the record of what it skipped, as ever
            await poison.record(conn, self._topic, partition, skipped)
            next_offset = max(stored, next_offset)
            await writer.store_offset(self._topic, partition, next_offset)
            await writer.flush()  # the batch's queued writes and its offset, in one round trip
        if sink and self._deferred is not None:
            # Committed: its deltas count now (a transaction that failed and is retried adds nothing).
            self._deferred.update(sink)
            if len(self._deferred) >= DEFERRED_STATS_LIMIT:
                await self._retrying(self._write_deferred)
        poison.report(self._topic, partition, skipped)
        self.applied += fresh
        self.skipped += len(skipped)
        async with self._progress:
            self._positions[partition] = next_offset
            self._progress.notify_all()
        self._since_analyze += fresh
        if self._since_analyze >= self._analyze_at and self._engine.dialect.name == "postgresql":
            self._analyze_soon()

    def _analyze_soon(self) -> None:
        """Start a refresh of the planner statistics beside the batches, unless one is running.

        An ``ANALYZE`` of tables with a million rows takes a second or more; awaited here it
        held up its partition's transaction slot, and with it the whole poll, while this
        process had nothing left to prepare. It runs on its own connection and needs no lock
        the batches take. A refresh that fails beyond its retries stops the projector before
        the next poll is applied (``_raise_analyze_failure``).
        """
        if self._analyzing is not None:
            if not self._analyzing.done():
                return  # the count goes on; the batch after this one finishes starts the next
            self._raise_analyze_failure()
        self._analyze_at = min(self._analyze_at * 2, ANALYZE_EVERY)
        self._since_analyze = 0
        self._analyzing = asyncio.create_task(self._retrying(self._analyze), name="projector-analyze")

    def _raise_analyze_failure(self) -> None:
        """The error of a finished refresh of the planner statistics, if it failed."""
        task, self._analyzing = self._analyzing, None
        if task is not None and task.done() and not task.cancelled():
            task.result()

    async def _stop_analyzing(self) -> None:
        """Cancel a refresh still running (the projector stops, or a replay ended)."""
        task, self._analyzing = self._analyzing, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elif task is not None and not task.cancelled() and task.exception() is not None:
            log.warning("planner statistics refresh failed", extra={"error": repr(task.exception())})

    async def _write_deferred(self, *, finished: bool = False) -> None:
        """Write the summed counter deltas in one transaction; ``finished``: also remove the
        marker of an unfinished replay (everything committed is then counted)."""
        async with self._writing_counters:  # one at a time: the first may insert rather than add
            await self._write_deferred_now(finished)

    async def _write_deferred_now(self, finished: bool) -> None:
        deltas, self._deferred = self._deferred or stats.Deltas(), stats.Deltas()
        try:
            async with self._engine.begin() as conn:
                writer = await writer_for(conn)
                if self._no_counters:  # a rebuild's counters: their final values, no upsert needed
                    await writer.insert_user_stats(deltas.user_rows())
                    await writer.insert_stats(deltas.counter_rows())
                else:
                    await writer.add_user_stats(deltas.user_rows())
                    await writer.add_stats(deltas.counter_rows())
                if finished:
                    o = ProjectorOffset
                    await conn.execute(delete(o).where(o.topic == self._topic, o.partition == REBUILDING))
        except BaseException:
            deltas.update(self._deferred or stats.Deltas())  # whatever committed meanwhile
            self._deferred = deltas
            raise
        self._no_counters = False
        log.info("stat counters written", extra={"counters": len(deltas), "finished": finished})

    async def _refuse_unfinished_rebuild(self) -> None:
        """Raise ``UnfinishedRebuild`` if a replay left stat counters unwritten (see ``REBUILDING``)."""
        if REBUILDING in await self.stored_offsets():
            raise UnfinishedRebuild(
                f"a replay of {self._topic} stopped before writing its stat counters: run herald rebuild again"
            )

    async def _mark_rebuilding(self) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                insert_for(conn, ProjectorOffset)
                .values(topic=self._topic, partition=REBUILDING, next_offset=0)
                .on_conflict_do_nothing()
            )
            # Nothing else writes counters while the marker is there (the projector refuses to run).
            self._no_counters = (await conn.execute(select(StatCounterRow.scope).limit(1))).first() is None and (
                await conn.execute(select(UserStatsRow.__table__.c.user_id).limit(1))
            ).first() is None

    async def _analyze(self) -> None:
        # Autovacuum refreshes planner statistics about once a minute; a fast-growing read
        # model (a replay, a backlog) meanwhile keeps the plans psycopg prepared while it was
        # small (sequential scans), which make every batch slower than the last. Refresh them
        # ourselves (an ANALYZE also invalidates those plans): see ``ANALYZED``.
        async with self._engine.begin() as conn:
            await conn.execute(text(f"SET LOCAL default_statistics_target = {ANALYZE_TARGET}"))
            await conn.execute(text(ANALYZE))

    async def catch_up(
        self,
        *,
        idle_timeout: float = 2.0,
        batch_size: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        defer_stats: bool = False,
        partitions: Collection[int] | None = None,
        rebuild_share: bool = False,
        refresh_statistics: bool = True,
    ) -> int:
        """Project every partition up to the end of the log now, without a consumer group.

        For rebuilds and replays with no live projector running. Stops once every partition
        has passed the end offset read at the start *and* a poll comes back empty (some
        brokers, Tansu among them, under-report end offsets), or after ``idle_timeout``
        seconds without records. ``batch_size``: events per transaction at most (default
        ``CATCH_UP_BATCH``: nobody waits on a rebuild's rows, so bigger transactions win).
        ``progress(done, total)`` is called once at the start and after each transaction (events applied or
        skipped, and the count at the start between the stored and the end offsets).
        ``defer_stats``: sum the stat counters' deltas in memory and write them at the end
        (and whenever ``DEFERRED_STATS_LIMIT`` counters are pending): one upsert per counter
        instead of one per batch that moves it, the largest share of a replay's database work.
        Meanwhile a marker row (``REBUILDING``) says the counters lag the rows: it goes with
        the last write, and a replay that stops before that (killed) leaves it, so the
        projector refuses to start on those read models until ``herald rebuild`` runs again.
        ``partitions``: replay only these partitions of the log (default: all of them).
        ``rebuild_share``: this replay is one of several, each over its own ``partitions``
        (``herald rebuild --processes N``), whose caller set the ``REBUILDING`` marker and
        removes it once every share finished: this one neither refuses to start on the
        marker, sets it nor removes it, and adds its summed counters (``defer_stats`` is
        implied) to what the other shares wrote.
        ``refresh_statistics``: refresh the planner statistics as the tables grow (see
        ``ANALYZE_FIRST``); off for all shares of a parallel rebuild but one (the tables, and
        their statistics, are the same for all: one refresh per share cost each an ANALYZE).
        Returns the events applied.
        """
        _tune_gc()
        if not refresh_statistics:
            self._analyze_at = 2**62  # an event count never reached
        if not rebuild_share:
            await self._refuse_unfinished_rebuild()
        if rebuild_share:
            self._no_counters = False  # other shares write counters too: add, never insert
            self._deferred = stats.Deltas()
        elif defer_stats:
            await self._mark_rebuilding()
            self._deferred = stats.Deltas()
        try:
            return await self._catch_up(idle_timeout, batch_size, progress, partitions)
        finally:
            if self._deferred is not None:
                # Also when the replay failed: what committed is counted, and the marker goes
                # (a share's marker is its caller's to remove).
                finished = not rebuild_share
                await self._retrying(lambda: self._write_deferred(finished=finished))
                self._deferred = None

    async def _catch_up(
        self,
        idle_timeout: float,
        batch_size: int | None,
        progress: Callable[[int, int], None] | None,
        only: Collection[int] | None = None,
    ) -> int:
        s = self._settings
        size = batch_size or max(s.projector_batch_size, CATCH_UP_BATCH)
        # "earliest" even though every partition is positioned explicitly below: an assigned
        # partition may start resetting by the default policy ("latest") before the seek, and
        # that reset could win, skipping the records of a partition that was never projected.
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
        )
        await consumer.start()
        start_applied = self.applied
        start = self.applied + self.skipped
        try:
            partitions = await _partitions(consumer, self._topic)
            if only is not None:
                if missing := set(only) - partitions:
                    raise ValueError(f"{self._topic} has no partition {', '.join(map(str, sorted(missing)))}")
                partitions = set(only)
            tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            stored = await self.stored_offsets()
            for tp in tps:
                if tp.partition in stored:
                    consumer.seek(tp, stored[tp.partition])
                else:
                    await consumer.seek_to_beginning(tp)
            ends = await consumer.end_offsets(tps)
            total = 0
            for tp in tps:
                total += max(0, ends[tp] - await consumer.position(tp))
            if progress is not None:
                progress(0, total)  # the total before the first transaction (a parallel rebuild sums them)
            report = None if progress is None else lambda: progress(self.applied + self.skipped - start, total)
            lanes = self._lanes(report, size)

            async def fetch() -> None:
                while True:
                    room = [tp for tp in tps if lanes.has_room(tp.partition)]
                    if not room:
                        await lanes.space()
                        continue
                    polled: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
                    for tp in room:  # buffered already: each partition a batch of its own
                        polled.update(await consumer.getmany(tp, timeout_ms=0, max_records=size))
                    if not polled and len(room) < len(tps):
                        # Until records come, or a full lane gets room (its partition is read then).
                        polled = await _getmany(consumer, room, int(idle_timeout * 1000), size, lanes)
                        if not polled:
                            continue
                    elif not polled:
                        behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
                        wait = idle_timeout if behind else 0.2
                        polled = await consumer.getmany(*tps, timeout_ms=int(wait * 1000), max_records=size)
                        if not polled:
                            if behind:
                                log.warning(
                                    "catch-up stopped: no records before the end offsets",
                                    extra={"behind": sorted(tp.partition for tp in behind)},
                                )
                            return
                    await self._dispatch({tp.partition: records for tp, records in polled.items()}, lanes)

            async with self._keeping_connections():
                fetcher = asyncio.create_task(fetch(), name="projector-catch-up-fetch")
                try:
                    await lanes.watch(fetcher)
                    await lanes.finish()  # everything read is applied
                finally:
                    fetcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await fetcher
                    await lanes.cancel()
                    await self._stop_analyzing()
        finally:
            await consumer.stop()
        return self.applied - start_applied


@dataclass(slots=True)
class _Work:
    """One partition's polled records, read and prepared, waiting to be applied."""

    partition: int
    next_offset: int
    """Offset after the last record (the checkpoint once applied)."""
    prepared: list[Prepared]
    skipped: list[Skipped]

    def size(self) -> int:
        """Events in this work (prepared and skipped)."""
        return len(self.prepared) + len(self.skipped)

    def merged(self, later: _Work) -> _Work:
        """This work and the ``later`` one of the same partition as one (one transaction), as if
        applied one after the other: of ``later``, only the records from this one's end on (the
        others, applied after this one committed, would be below its checkpoint: a partition
        read again from its stored offset after a rebalance, while works read before waited)."""
        end = self.next_offset
        return _Work(
            self.partition,
            max(end, later.next_offset),
            self.prepared + [p for p in later.prepared if p.offset >= end],
            self.skipped + [s for s in later.skipped if s.offset >= end],
        )


class _Lanes:
    """One apply lane per partition: its works applied in order, one transaction at a time, by
    its own task; at most ``concurrency`` transactions in flight across the lanes, at most
    ``depth`` works waiting in each lane. A lane's failure stops the lot (``watch``).

    A lane that finds more than one work waiting when it takes the next applies those that fit
    in ``merge_up_to`` events as one transaction: they were read already and would only have
    waited for each other's commit, and a transaction costs the projector and Postgres about
    2 and 1.3 ms whatever its size (a live trickle's polls are small: the steady 500/s phase
    had 4-17 events a transaction, the burst 200-400).
    """

    def __init__(
        self, apply: Callable[[_Work], Awaitable[None]], concurrency: int, depth: int, merge_up_to: int = 0
    ) -> None:
        self._apply = apply
        self._slots = asyncio.Semaphore(concurrency)
        self._depth = depth
        self._merge_up_to = merge_up_to
        self._queues: dict[int, asyncio.Queue[_Work | None]] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._room = asyncio.Event()
        """Set whenever a lane takes a work from its queue."""
        self._failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Fails with the first lane's error."""

    def has_room(self, partition: int) -> bool:
        """Whether ``partition``'s lane takes another work now."""
        queue = self._queues.get(partition)
        return queue is None or queue.qsize() < self._depth

    async def space(self) -> None:
        """Until a lane takes a work from its queue (call right after finding no room: no await between)."""
        self._room.clear()
        await self._room.wait()

    def space_event(self) -> asyncio.Event:
        """The event ``space`` waits for (cleared by the caller before waiting)."""
        return self._room

    def put(self, work: _Work) -> None:
        """Queue ``work`` on its partition's lane (started on first use)."""
        queue = self._queues.get(work.partition)
        if queue is None:
            queue = self._queues[work.partition] = asyncio.Queue()
            task = asyncio.create_task(self._lane(queue), name=f"projector-lane-{work.partition}")
            task.add_done_callback(self._ended)
            self._tasks[work.partition] = task
        queue.put_nowait(work)

    async def _lane(self, queue: asyncio.Queue[_Work | None]) -> None:
        ending = False
        while not ending and (work := await queue.get()) is not None:
            self._room.set()
            async with self._slots:
                # Taken once a transaction slot is free: what queued meanwhile goes along.
                while not queue.empty():
                    later = queue._queue[0]  # type: ignore[attr-defined]  # a peek: asyncio.Queue has none
                    if later is not None and work.size() + later.size() > self._merge_up_to:
                        break
                    queue.get_nowait()
                    if later is None:
                        ending = True  # finish(): apply what is merged, then end
                        break
                    work = work.merged(later)
                self._room.set()
                await self._apply(work)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None and not self._failed.done():
            self._failed.set_exception(exc)

    async def watch(self, *tasks: asyncio.Task[Any]) -> None:
        """Until one of ``tasks`` ends (its error raised) or a lane fails (its error raised)."""
        done, _ = await asyncio.wait({self._failed, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        for task in (self._failed, *tasks):
            if task in done:
                task.result()

    async def finish(self, *, drop_waiting: bool = False) -> None:
        """Apply every work queued (``drop_waiting``: only those being applied now), then end
        the lanes; the first failure raises."""
        for queue in self._queues.values():
            if drop_waiting:
                while not queue.empty():
                    queue.get_nowait()
            queue.put_nowait(None)
        running: set[asyncio.Future[None]] = set(self._tasks.values())
        while running:
            done, running = await asyncio.wait({self._failed, *running}, return_when=asyncio.FIRST_COMPLETED)
            if self._failed in done:
                self._failed.result()
            running.discard(self._failed)

    async def cancel(self) -> None:
        """Stop every lane now (a transaction in flight rolls back)."""
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._failed.done() and not self._failed.cancelled():
            self._failed.exception()  # retrieved: raised by watch or finish already, or moot
        self._failed.cancel()


async def _getmany(
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    timeout_ms: int,
    max_records: int,
    lanes: _Lanes | None,
) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    """``consumer.getmany`` of ``partitions``; with ``lanes`` (some partitions were left out: their
    lanes were full), it stops waiting, empty-handed, as soon as a lane takes a work."""
    if lanes is None:
        polled: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
        polled = await consumer.getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)
        return polled
    room = lanes.space_event()
    room.clear()
    getting: asyncio.Future[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]] = asyncio.ensure_future(
        consumer.getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)
    )
    waking: asyncio.Future[Any] = asyncio.ensure_future(room.wait())
    try:
        await asyncio.wait({getting, waking}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waking.cancel()
        if not getting.done():
            getting.cancel()  # records are taken from the buffer only when getmany returns them
            with contextlib.suppress(asyncio.CancelledError):
                await getting
    return getting.result() if not getting.cancelled() else {}


def _prepare_into(work: _Work, records: list[ConsumerRecord[bytes, bytes]]) -> None:
    for record in records:
        try:
            env, data = read_with_data(record.value, record.headers or ())
        except Exception as exc:  # noqa: BLE001 - Unreadable, or anything else one record can cause
            work.skipped.append(Skipped(record.offset, None, None, "decode", describe(exc)))
            continue
        try:
            work.prepared.append(prepare(work.partition, record.offset, env, data))
        except Exception as exc:  # noqa: BLE001 - a failure of one event's checks is that event's alone
            work.skipped.append(Skipped(record.offset, env.id, env.type, "apply", describe(exc)))


def _transient(exc: BaseException) -> bool:
    """A failure of the database or the connection, not of the events: retry, never skip."""
    if isinstance(exc, DBAPIError):
        return not poison.is_event_fault(exc)
    if isinstance(exc, StatementError):
        return False  # a value SQLAlchemy could not bind: the event's
    return isinstance(exc, OSError | TimeoutError | SQLAlchemyError)


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return set(partitions)
        await consumer.topics()
        await asyncio.sleep(0.1)
    raise TopicMissing(f"topic {topic} does not exist")


class _SeekToStored(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, resume each partition from the database checkpoint, not Kafka's."""

    def __init__(self, projector: Projector) -> None:
        self._projector = projector

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        consumer = self._projector._consumer
        if consumer is None:  # assignments only happen on a started consumer
            return
        stored = await self._projector.stored_offsets()
        for tp in assigned:
            if tp.partition in stored:
                consumer.seek(tp, stored[tp.partition])
            else:
                await consumer.seek_to_beginning(tp)
            self._projector._gaps.reset(tp.partition, stored.get(tp.partition))
