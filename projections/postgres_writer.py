"""The projector's writes on Postgres: constant statement text, one array parameter per column.

Every statement here has the same text whatever the batch size (``unnest`` of typed
arrays), so psycopg prepares it once per connection and each batch costs one execute per
kind of row: no SQL building, no per-row parameters, no ORM. Everything runs on the
driver connection under the caller's SQLAlchemy transaction, with the offsets row.
String arrays are ``text[]``: assigning an over-long value to a ``VARCHAR(n)`` column
fails loudly, where a cast to ``varchar(n)[]`` would cut it silently.
"""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Iterable, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

import psycopg
from psycopg import AsyncConnection as PgConnection
from psycopg.adapt import Dumper
from psycopg.errors import UniqueViolation
from psycopg.pq import Format
from sqlalchemy.ext.asyncio import AsyncConnection

from projections.models import USER_COUNTERS
from projections.notifications import ChannelState, NotificationState, States

CLAIM_OFFSET = (
    "INSERT INTO projector_offsets (topic, partition, next_offset) VALUES (%s, %s, 0)"
    " ON CONFLICT (topic, partition) DO UPDATE SET next_offset = projector_offsets.next_offset"
    " RETURNING next_offset"
)
"""Read a partition's checkpoint and lock its row until commit: a second projector briefly
owning the same partition (a rebalance) waits here, then sees the advanced offset."""
ASYNC_COMMIT = "SET LOCAL synchronous_commit TO OFF"
STORE_OFFSET = "UPDATE projector_offsets SET next_offset = %b WHERE topic = %b AND partition = %b"

KNOWN_EVENTS = "SELECT event_id FROM projected_events WHERE event_id = ANY(%b::text[])"
"""Which of a batch's event ids the ledger holds already (applied before)."""
LEDGER_COLUMNS = (
    ("event_id", "text"),
    ("type", "text"),
    ("subject", "text"),
    ("user_id", "text"),
    ("source", "text"),
    ("time", "timestamptz"),
    ("correlation_id", "text"),
    ("partition", "int4"),
    ("offset", "int8"),
    ("data_json", "text"),  # into the json column ``data``: its binary form is its text
)

LOAD_NOTIFICATIONS = (
    "SELECT id, user_id, status, created_at, priority, attempts, error, delivered_at, read_at, deleted_at"
    " FROM notifications WHERE id = ANY(%b::text[])"
)
LOAD_CHANNELS = (
    "SELECT notification_id, channel, state, attempts, target, provider_id, error, delivered_at, next_attempt_at,"
    " updated_at FROM notification_channels WHERE notification_id = ANY(%b::text[])"
)

NOTIFICATION_COLUMNS = (
    ("id", "text"),
    ("user_id", "text"),
    ("title", "text"),
    ("body", "text"),
    ("priority", "text"),
    ("channels", "text"),
    ("channel_mask", "int4"),
    ("category", "text"),
    ("data", "text"),
    ("status", "text"),
    ("attempts", "int4"),
    ("error", "text"),
    ("device_token", "text"),
    ("correlation_id", "text"),
    ("idempotency_key", "text"),
    ("collapse_key", "text"),
    ("created_at", "timestamptz"),
    ("delivered_at", "timestamptz"),
    ("read_at", "timestamptz"),
    ("deleted_at", "timestamptz"),
    ("expires_at", "timestamptz"),
    ("deliver_after", "timestamptz"),
)
CHANNEL_COLUMNS = (
    ("notification_id", "text"),
    ("channel", "text"),
    ("state", "text"),
    ("attempts", "int4"),
    ("target", "text"),
    ("provider_id", "text"),
    ("error", "text"),
    ("delivered_at", "timestamptz"),
    ("next_attempt_at", "timestamptz"),
    ("updated_at", "timestamptz"),
)

UPDATE_NOTIFICATIONS = (
    "UPDATE notifications AS n SET status = v.status, attempts = v.attempts, error = v.error,"
    " delivered_at = v.delivered_at, read_at = v.read_at, deleted_at = v.deleted_at"
    " FROM unnest(%b::text[], %b::text[], %b::int[], %b::text[], %b::timestamptz[], %b::timestamptz[],"
    " %b::timestamptz[]) AS v(id, status, attempts, error, delivered_at, read_at, deleted_at)"
    " WHERE n.id = v.id"
)
"""Existing notifications: only the columns that change after acceptance."""

UPSERT_CHANNELS = (
    "INSERT INTO notification_channels (notification_id, channel, state, attempts, target, provider_id, error,"
    " delivered_at, next_attempt_at, updated_at)"
    " SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::int[], %b::text[], %b::text[], %b::text[],"
    " %b::timestamptz[], %b::timestamptz[], %b::timestamptz[])"
    " ON CONFLICT (notification_id, channel) DO UPDATE SET state = excluded.state, attempts = excluded.attempts,"
    " target = excluded.target, provider_id = excluded.provider_id, error = excluded.error,"
    " delivered_at = excluded.delivered_at, next_attempt_at = excluded.next_attempt_at,"
    " updated_at = excluded.updated_at"
)

DELIVERY_COLUMNS = (
    ("event_id", "text"),
    ("notification_id", "text"),
    ("user_id", "text"),
    ("channel", "text"),
    ("outcome", "text"),
    ("target", "text"),
    ("attempt", "int4"),
    ("provider_id", "text"),
    ("error", "text"),
    ("retriable", "bool"),
    ("latency_ms", "float8"),
    ("at", "timestamptz"),
)

STAT_DELTAS = (
    "CREATE TEMP TABLE IF NOT EXISTS herald_stat_deltas (scope text, metric text, key text, count bigint)"
    " ON COMMIT DELETE ROWS"
)
"""Per-session staging table of a batch's counter deltas (emptied at each commit)."""
ADD_STAT_DELTAS = (
    "INSERT INTO stat_counters (scope, metric, key, count) SELECT scope, metric, key, count FROM herald_stat_deltas"
    " ORDER BY scope, metric, key"
    " ON CONFLICT (scope, metric, key) DO UPDATE SET count = stat_counters.count + excluded.count"
)
"""Counter deltas copied in binary (C-formatted rows) rather than dumped as Python-built arrays."""
ADD_STATS = (
    "INSERT INTO stat_counters (scope, metric, key, count) SELECT * FROM unnest(%b::text[], %b::text[], %b::text[],"
    " %b::bigint[]) ON CONFLICT (scope, metric, key) DO UPDATE SET count = stat_counters.count + excluded.count"
)
DROP_EMPTY_STATS = (
    "DELETE FROM stat_counters AS s USING unnest(%b::text[], %b::text[], %b::text[]) AS v(scope, metric, key)"
    " WHERE s.scope = v.scope AND s.metric = v.metric AND s.key = v.key AND s.count = 0"
)

_USER_COLUMNS = ", ".join(name for name, _, _ in USER_COUNTERS)
_WIDTH = len(USER_COUNTERS)
ADD_USER_STATS = (
    f"INSERT INTO user_stats (user_id, {_USER_COLUMNS}) SELECT u.user_id, "  # noqa: S608 - the models' names
    + ", ".join(f"d.v[k.at + {i}]" for i in range(1, _WIDTH + 1))
    + " FROM unnest(%b::text[]) WITH ORDINALITY AS u(user_id, n)"
    f" CROSS JOIN LATERAL (SELECT (u.n::int4 - 1) * {_WIDTH} AS at) AS k, (SELECT %b::int4[] AS v) AS d"
    " ON CONFLICT (user_id) DO UPDATE SET "
    + ", ".join(f"{name} = user_stats.{name} + excluded.{name}" for name, _, _ in USER_COUNTERS)
)
"""A batch's users' counter deltas, one row per user (see ``projections.models.UserStatsRow``): the
user ids, then every user's deltas in one flat ``int4[]`` (``_int4_array``), one row after the other.
Exactly ``int4[]``, the parameter's own type: a cast would be evaluated at each subscript once
psycopg prepares the statement (its generic plan), 46 times per row."""
ADD_WIDE_USER_STATS = (
    f"INSERT INTO user_stats (user_id, {_USER_COLUMNS})"  # noqa: S608 - the models' names
    f" SELECT * FROM unnest(%b::text[], {', '.join(['%b::int8[]'] * _WIDTH)})"
    " ON CONFLICT (user_id) DO UPDATE SET "
    + ", ".join(f"{name} = user_stats.{name} + excluded.{name}" for name, _, _ in USER_COUNTERS)
)
"""The same with one ``int8[]`` per column, for deltas beyond 32 bits (a rebuild's sums, in theory)."""
_ALL_ZERO = " AND ".join(f"{name} = 0" for name, _, _ in USER_COUNTERS)
DROP_EMPTY_USER_STATS = f"DELETE FROM user_stats WHERE user_id = ANY(%b::text[]) AND {_ALL_ZERO}"  # noqa: S608 - as above
USER_STAT_COLUMNS = (("user_id", "text"), *((name, "int8") for name, _, _ in USER_COUNTERS))


async def driver(conn: AsyncConnection) -> PgConnection[Any]:
    """The psycopg connection under ``conn`` (same session, same transaction)."""
    raw = await conn.get_raw_connection()
    pg = raw.driver_connection
    if not isinstance(pg, PgConnection):
        raise TypeError("the Postgres writer needs the psycopg driver (postgresql+psycopg://)")
    return pg


def _insert_unnest(
    table: str, spec: Sequence[tuple[str, str]], *, json_columns: Sequence[str] = (), suffix: str = ""
) -> str:
    """``INSERT INTO table (..) SELECT .. FROM unnest(%b::type[], ..)``: the rows of a small batch
    as one array parameter per column (see ``COPY_FROM``); ``json_columns``: text columns cast to json."""
    names = ", ".join(f'"{name}"' for name, _ in spec)
    arrays = ", ".join(f"%b::{kind}[]" for _, kind in spec)
    columns = ", ".join(f"v{i}::json" if name in json_columns else f"v{i}" for i, (name, _) in enumerate(spec))
    aliases = ", ".join(f"v{i}" for i in range(len(spec)))
    return f"INSERT INTO {table} ({names}) SELECT {columns} FROM unnest({arrays}) AS v({aliases}){suffix}"  # noqa: S608


COPY_FROM = 128
"""Rows from which a kind of new row goes in with binary ``COPY``; fewer (a live trickle's small
batches) go in as one ``INSERT .. unnest`` each, which needs no round trip of its own: it is
sent with the batch's other writes in one pipeline (``PostgresWriter.flush``). A ``COPY`` costs
two round trips and cannot be pipelined; with array parameters psycopg dumps every value in
Python, which a thousand rows pay for and a few dozen do not."""

STAGE_STATS_FROM = 64
"""Counter deltas from which staging them with COPY beats array parameters."""
STAT_COLUMNS = (("scope", "text"), ("metric", "text"), ("key", "text"), ("count", "int8"))


class PostgresWriter:
    """The batch writes of ``projections.batch`` for one transaction on Postgres.

    Rows that are new for certain go in with binary ``COPY`` (the cheapest way in, on
    both sides of the connection): ledger rows of events the ledger did not hold, the
    notifications and channel rows that did not exist when the batch loaded its
    snapshots, the delivery rows of those new events. A second projector cannot add
    them meanwhile: the partition's offsets row is locked first (``claim_offset``).
    Changes to existing rows are set-based ``UPDATE``/upserts over binary arrays.

    A small batch (a live trickle: a few dozen events per transaction) pays mostly for
    round trips, each a system call and a wake-up on both sides of the connection: its new
    rows go in as ``INSERT .. unnest`` (``COPY_FROM``), the ledger's with ``ON CONFLICT DO
    NOTHING RETURNING``, and its snapshots are loaded in one pipeline. ``deferred``: the
    writes whose outcome the batch does not read (inserts, updates, counters, the offset)
    are queued and sent together, in order, by ``flush``, one round trip; their errors
    surface there, before the commit, as they would have one by one.
    """

    def __init__(self, pg: PgConnection[Any], *, deferred: bool = False) -> None:
        self._pg = pg
        self._deferred = deferred
        self._queued: list[tuple[str, Sequence[Any]]] = []

    async def flush(self) -> None:
        """Send the queued writes, in order, in one pipeline; the first that fails raises."""
        queued, self._queued = self._queued, []
        if len(queued) == 1:
            await self._pg.execute(*queued[0])
        elif queued:
            async with self._pg.pipeline():
                for query, params in queued:
                    await self._pg.execute(query, params)

    async def _write(self, query: str, params: Sequence[Any]) -> None:
        """A write whose outcome the batch does not read: queued if ``deferred``, else sent now."""
        self._queued.append((query, params))
        if not self._deferred:
            await self.flush()

    async def claim_offset(self, topic: str, partition: int) -> int:
        """The partition's stored next offset, its row locked until commit.

        Also makes this transaction's commit asynchronous: it is visible at once, only its
        WAL flush is not awaited. A Postgres crash may then forget the last few projector
        transactions, rows and offsets together, and the projector simply applies those
        events again from the log: the read models stay consistent, commits stop waiting
        for the disk.
        """
        await self.flush()
        async with self._pg.pipeline():  # the transaction's start, both statements: one round trip
            await self._pg.execute(ASYNC_COMMIT)
            cur = await self._pg.execute(CLAIM_OFFSET, (topic, partition))
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def store_offset(self, topic: str, partition: int, next_offset: int) -> None:
        """Move the partition's checkpoint (its row was claimed in this transaction)."""
        await self._write(STORE_OFFSET, (next_offset, topic, partition))

    async def claim_events(self, ledger: Sequence[dict[str, Any]]) -> set[str]:
        """Write the ledger rows not there yet; return their ids (the events to apply).

        Events are new nearly always, so their rows are copied in at once, under a savepoint;
        only when the ledger's key refuses one (an event applied before, or being applied by
        a transaction that just committed) does it roll back to the savepoint and ask which
        events it holds. One index descent per event instead of a lookup and then an insert.
        Fewer than ``COPY_FROM`` rows: one ``INSERT .. ON CONFLICT DO NOTHING RETURNING``
        instead (one round trip; the savepoint and the ``COPY`` take four).
        """
        if not ledger:
            return set()
        await self.flush()
        if len(ledger) < COPY_FROM:
            cur = await self._pg.execute(CLAIM_LEDGER, _columns(LEDGER_COLUMNS, ledger))
            return {row[0] for row in await cur.fetchall()}
        try:
            async with self._pg.transaction():  # a savepoint inside the caller's transaction
                await self._copy("projected_events", LEDGER_COLUMNS, ledger, rename={"data_json": "data"})
            return {row["event_id"] for row in ledger}
        except UniqueViolation as exc:
            if exc.diag.table_name != "projected_events":  # its only unique key is the event id
                raise
        cur = await self._pg.execute(KNOWN_EVENTS, ([row["event_id"] for row in ledger],))
        known = {row[0] for row in await cur.fetchall()}
        rows = [row for row in ledger if row["event_id"] not in known]
        await self._copy("projected_events", LEDGER_COLUMNS, rows, rename={"data_json": "data"})
        return {row["event_id"] for row in rows}

    async def load(self, ids: Sequence[str]) -> States:
        """Snapshots of the notifications ``ids`` that exist (what the fold reads, no content):
        the notifications and their channels, both asked in one round trip."""
        states: States = {}
        if not ids:
            return states
        await self.flush()
        wanted = list(ids)
        async with self._pg.pipeline():
            notifications = await self._pg.execute(LOAD_NOTIFICATIONS, (wanted,))
            channels = await self._pg.execute(LOAD_CHANNELS, (wanted,))
        for (
            nid,
            user,
            status,
            created,
            priority,
            attempts,
            error,
            delivered,
            read,
            deleted,
        ) in await notifications.fetchall():
            states[nid] = NotificationState(
                id=nid,
                user_id=user,
                status=status,
                created_at=created,
                priority=priority,
                attempts=attempts,
                error=error,
                delivered_at=delivered,
                read_at=read,
                deleted_at=deleted,
            )
        for nid, channel, *values in await channels.fetchall():
            state = states.get(nid)
            if state is not None:  # a channel row has its notification (same transaction, same snapshot)
                state.channel_states[channel] = ChannelState(*values)
        return states

    async def insert_notifications(self, rows: Sequence[dict[str, Any]]) -> None:
        """New notification rows."""
        for row in rows:
            row["channels"] = _channels_json(row["channels"])
            row["data"] = _json(row["data"])
        if 0 < len(rows) < COPY_FROM:
            await self._write(INSERT_NOTIFICATIONS, _columns(NOTIFICATION_COLUMNS, rows))
        else:
            await self._copy("notifications", NOTIFICATION_COLUMNS, rows)

    async def update_notifications(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """``(id, status, attempts, error, delivered_at, read_at, deleted_at)`` of changed notifications."""
        if rows:
            await self._write(UPDATE_NOTIFICATIONS, [list(c) for c in zip(*rows, strict=True)])

    async def insert_channels(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Channel rows of new notifications, in ``CHANNEL_COLUMNS`` order."""
        if 0 < len(rows) < COPY_FROM:
            await self._write(INSERT_CHANNELS, [list(c) for c in zip(*rows, strict=True)])
        else:
            await self._copy_tuples("notification_channels", CHANNEL_COLUMNS, rows)

    async def upsert_channels(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Changed channel rows of existing notifications, in ``CHANNEL_COLUMNS`` order."""
        if rows:
            await self._write(UPSERT_CHANNELS, [list(c) for c in zip(*rows, strict=True)])

    async def insert_deliveries(self, rows: Sequence[dict[str, Any]]) -> None:
        """Delivery rows of new events."""
        if 0 < len(rows) < COPY_FROM:
            columns = _columns(DELIVERY_COLUMNS, rows)
            latency = _FLOAT_AT["deliveries"]
            columns[latency] = [None if v is None else float(v) for v in columns[latency]]
            await self._write(INSERT_DELIVERIES, columns)
        else:
            await self._copy("deliveries", DELIVERY_COLUMNS, rows)

    async def add_stats(self, deltas: Sequence[tuple[str, str, str, int]]) -> None:
        """Add ``(scope, metric, key, delta)`` to the counters (sorted: a stable lock order); drop zeros."""
        if not deltas:
            return
        if len(deltas) < STAGE_STATS_FROM:
            await self._write(ADD_STATS, [list(c) for c in zip(*deltas, strict=True)])
        else:
            # Every time, not once per session: a first batch that rolls back takes the
            # table's creation with it.
            await self._write(STAT_DELTAS, ())
            await self._copy_tuples("herald_stat_deltas", STAT_COLUMNS, deltas)
            await self._write(ADD_STAT_DELTAS, ())
        emptied = [d[:3] for d in deltas if d[3] < 0]
        if emptied:
            await self._write(DROP_EMPTY_STATS, [list(c) for c in zip(*emptied, strict=True)])

    async def insert_stats(self, counters: Sequence[tuple[str, str, str, int]]) -> None:
        """``(scope, metric, key, count)`` of counters not there yet (non-zero): one binary ``COPY``."""
        await self._copy_tuples("stat_counters", STAT_COLUMNS, counters)

    async def add_user_stats(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Add ``(user id, *deltas)`` rows (sorted by user: a stable lock order) to ``user_stats``;
        drop the rows left all zeros (only a falling ``total`` can leave one so)."""
        if not rows:
            return
        deltas = _int4_array(list(chain.from_iterable(row[1:] for row in rows)))
        if deltas is None:
            await self._write(ADD_WIDE_USER_STATS, [list(c) for c in zip(*rows, strict=True)])
        else:
            await self._write(ADD_USER_STATS, ([row[0] for row in rows], deltas))
        emptied = [row[0] for row in rows if row[_TOTAL] < 0]
        if emptied:
            await self._write(DROP_EMPTY_USER_STATS, (emptied,))

    async def insert_user_stats(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """``(user id, *counts)`` rows of users not there yet: one binary ``COPY``."""
        await self._copy_tuples("user_stats", USER_STAT_COLUMNS, rows)

    async def _copy(
        self,
        table: str,
        spec: Sequence[tuple[str, str]],
        rows: Sequence[dict[str, Any]],
        rename: dict[str, str] | None = None,
    ) -> None:
        if rows:
            values = itemgetter(*(name for name, _ in spec))
            await self._copy_tuples(table, spec, map(values, rows), rename=rename)

    async def _copy_tuples(
        self,
        table: str,
        spec: Sequence[tuple[str, str]],
        rows: Iterable[tuple[Any, ...]],
        rename: dict[str, str] | None = None,
    ) -> None:
        if isinstance(rows, Sequence) and not rows:
            return
        await self.flush()  # the writes queued before it go first
        rename = rename or {}
        target = ", ".join(f'"{rename.get(name, name)}"' for name, _ in spec)
        async with self._pg.cursor().copy(f"COPY {table} ({target}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([t for _, t in spec])
            # The formatter's rows, sent each time its buffer fills (what ``copy.write_row`` does,
            # without a coroutine per row: thousands per batch).
            write_row = copy.formatter.write_row
            for row in rows:
                if data := write_row(row):
                    await copy.write(data)


def _columns(spec: Sequence[tuple[str, str]], rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """One list per column of ``spec`` (the array parameters of an ``INSERT .. unnest``)."""
    return [[row[name] for row in rows] for name, _ in spec]


_LEDGER_TARGET = tuple(("data" if name == "data_json" else name, kind) for name, kind in LEDGER_COLUMNS)
CLAIM_LEDGER = _insert_unnest(
    "projected_events",
    _LEDGER_TARGET,
    json_columns=("data",),
    suffix=" ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
)
"""A small batch's ledger rows; the ids of those the ledger did not hold come back."""
INSERT_NOTIFICATIONS = _insert_unnest("notifications", NOTIFICATION_COLUMNS, json_columns=("channels", "data"))
INSERT_CHANNELS = _insert_unnest("notification_channels", CHANNEL_COLUMNS)
INSERT_DELIVERIES = _insert_unnest("deliveries", DELIVERY_COLUMNS)
_FLOAT_AT = {"deliveries": [name for name, _ in DELIVERY_COLUMNS].index("latency_ms")}
"""Where a ``float8`` column is (psycopg picks an array's type by its values: an int among floats
would not fit; ``COPY`` converts them by the column's type)."""


class _Int4Array(bytes):
    """A one-dimensional ``int4[]`` already in Postgres's binary array format."""


class _Int4ArrayDumper(Dumper):
    format = Format.BINARY
    oid = psycopg.postgres.types["int4"].array_oid

    def dump(self, obj: Any) -> bytes:
        return bytes(obj)


psycopg.adapters.register_dumper(_Int4Array, _Int4ArrayDumper)

_INT4_ARRAY_HEADER = array("i", [1, 0, psycopg.postgres.types["int4"].oid])
"""Dimensions, has-nulls flag, element type; then per dimension its length and lower bound (1)."""


def _int4_array(values: list[int]) -> _Int4Array | None:
    """``values`` as a binary ``int4[]`` built in C (psycopg dumps a list element by element in
    Python: for a batch's thousands of counter deltas, most of the writer's time); None if one
    does not fit in 32 bits."""
    body = array("i", [4]) * (2 * len(values))  # each element: its length (4 bytes), its value
    try:
        body[1::2] = array("i", values)
    except OverflowError:
        return None
    out = _INT4_ARRAY_HEADER + array("i", [len(values), 1]) + body
    if sys.byteorder == "little":
        out.byteswap()  # network order
    return _Int4Array(out.tobytes())


_TOTAL = 1 + [name for name, _, _ in USER_COUNTERS].index("total")
"""Position of ``total`` in a ``user_stats`` row tuple."""
_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_CHANNELS_JSON: dict[tuple[str, ...], str] = {}


def _channels_json(channels: list[str]) -> str:
    # A handful of distinct channel lists: serialise each once.
    key = tuple(channels)
    text = _CHANNELS_JSON.get(key)
    if text is None:
        text = _json(channels)
        if len(_CHANNELS_JSON) < 64:  # bounded: channel lists are few, but keep it so
            _CHANNELS_JSON[key] = text
    return text
