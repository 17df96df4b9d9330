"""Applying one batch of events to every read model with set-based writes.

Steps, all inside the caller's transaction (writes through a ``Writer``: constant-text
``unnest`` statements on the psycopg connection for Postgres, SQLAlchemy Core elsewhere):
1. each event is checked on its own (its rows fit their columns, its data serialises):
   one that cannot be applied is set aside as skipped (``projections.poison``), the rest
   of the batch goes on;
2. the ledger (``projected_events``) filters out events applied before: re-applying an
   event, even after offsets were reset, changes nothing;
3. the notifications the batch touches are loaded once, the batch is folded into them in
   memory (``projections.notifications.fold``), and only the differences are written,
   each kind of write as one multi-row statement;
4. stat counters move by the difference of what the touched notifications contribute
   before and after: a user's fixed counters as one ``user_stats`` row per user, the rest
   (global ones, the latency histogram) as ``stat_counters`` rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from sqlalchemy import String
from sqlalchemy.ext.asyncio import AsyncConnection

from projections import deliveries, devices, stats
from projections.core_writer import CoreWriter
from projections.models import USER_COUNTERS, ContactRow, DeviceRow, EventRow, NotificationRow
from projections.notifications import (
    NotificationState,
    States,
    channel_mask,
    channel_values,
    contributions,
    fold,
    mutable_values,
    notification_id_of,
)
from projections.poison import Skipped, describe, too_long
from projections.postgres_writer import PostgresWriter, driver
from schemas.codec import event_to_data
from schemas.envelope import Envelope
from schemas.events import (
    BulkTargetRefused,
    ContactUpdated,
    DeliverySucceeded,
    NotificationAccepted,
    NotificationDuplicate,
    NotificationRateLimited,
    NotificationRejected,
)

Positioned = tuple[int, Envelope]
"""An event and its offset in the partition."""


class Writer(Protocol):
    """The writes of one batch, inside the caller's transaction (see ``projections.postgres_writer``)."""

    async def claim_offset(self, topic: str, partition: int) -> int: ...
    async def store_offset(self, topic: str, partition: int, next_offset: int) -> None: ...
    async def claim_events(self, ledger: Sequence[dict[str, Any]]) -> set[str]: ...
    async def load(self, ids: Sequence[str]) -> States: ...
    async def insert_notifications(self, rows: Sequence[dict[str, Any]]) -> None: ...
    async def update_notifications(self, rows: Sequence[tuple[Any, ...]]) -> None: ...
    async def insert_channels(self, rows: Sequence[tuple[Any, ...]]) -> None: ...
    async def upsert_channels(self, rows: Sequence[tuple[Any, ...]]) -> None: ...
    async def insert_deliveries(self, rows: Sequence[dict[str, Any]]) -> None: ...
    async def add_stats(self, deltas: Sequence[tuple[str, str, str, int]]) -> None: ...
    async def insert_stats(self, counters: Sequence[tuple[str, str, str, int]]) -> None: ...
    async def add_user_stats(self, rows: Sequence[tuple[Any, ...]]) -> None: ...
    async def insert_user_stats(self, rows: Sequence[tuple[Any, ...]]) -> None: ...
    async def flush(self) -> None: ...


async def writer_for(conn: AsyncConnection, *, deferred: bool = False) -> Writer:
    """The fast Postgres writer on psycopg, SQLAlchemy Core on anything else. ``deferred``: the
    writes whose outcome the batch does not read may wait for ``flush`` (the caller's, before
    its commit) to go out together (``PostgresWriter``)."""
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        return PostgresWriter(await driver(conn), deferred=deferred)
    return CoreWriter(conn)


@dataclass(slots=True)
class Outcome:
    """What applying a batch did."""

    fresh: int = 0
    """Events applied now (not seen before)."""
    skipped: list[Skipped] = field(default_factory=list)
    """Events set aside before any write because they cannot be applied, in offset order."""


@dataclass(slots=True)
class Prepared:
    """One event checked and turned into its own rows, ready for a batch (see ``prepare``)."""

    offset: int
    env: Envelope
    ledger: dict[str, Any]
    delivery: dict[str, Any] | None


async def apply_batch(conn: AsyncConnection, partition: int, batch: Sequence[Positioned]) -> int:
    """Apply ``batch`` (one partition, offset order); return how many events were new."""
    return (await apply_events(conn, partition, batch)).fresh


async def apply_events(
    conn: AsyncConnection, partition: int, batch: Sequence[Positioned], writer: Writer | None = None
) -> Outcome:
    """Apply ``batch`` (one partition, offset order), setting aside the events that cannot be applied.

    An event whose own checks fail is set aside before anything is written; a failure
    during the fold or the writes propagates (the projector then isolates the event at
    fault by applying the batch one event per transaction).
    """
    outcome = Outcome()
    prepared: list[Prepared] = []
    for offset, env in batch:
        try:
            prepared.append(prepare(partition, offset, env))
        except Exception as exc:  # noqa: BLE001 - a failure of one event's checks is that event's alone
            outcome.skipped.append(Skipped(offset, env.id, env.type, "apply", describe(exc)))
    outcome.fresh = await apply_prepared(conn, partition, prepared, writer)
    return outcome


async def apply_prepared(
    conn: AsyncConnection,
    partition: int,
    batch: Sequence[Prepared],
    writer: Writer | None = None,
    stat_sink: stats.Deltas | None = None,
) -> int:
    """Apply prepared events (one partition, offset order); return how many were new.

    ``stat_sink``: the batch's counter deltas are added to it instead of being written (a
    rebuild writes them once, summed over many batches: ``Projector.catch_up``); the
    caller then owns them, and must count them only once this transaction commits.
    """
    writer = writer or await writer_for(conn)
    unique: dict[str, Prepared] = {}
    for p in batch:
        unique.setdefault(p.env.id, p)  # the same event twice inside one batch counts once
    if not unique:
        return 0
    new_ids = await writer.claim_events([p.ledger for p in unique.values()])
    fresh = [p for p in unique.values() if p.env.id in new_ids]
    if not fresh:
        return 0
    touched = {nid for p in fresh if (nid := notification_id_of(p.env)) is not None}
    states = await writer.load(sorted(touched))
    prior = {nid: _Prior.of(state) for nid, state in states.items()}
    for p in fresh:
        fold(states, p.env)
    envelopes = [p.env for p in fresh]
    for env in envelopes:
        if isinstance(env.data, devices.DEVICE_EVENTS):
            await devices.apply_device(conn, env)
    await devices.apply_contacts(conn, envelopes)
    await devices.apply_last_notifications(conn, envelopes)
    await writer.insert_notifications([_row(s) for nid, s in states.items() if nid not in prior])
    await writer.update_notifications(
        [
            (nid, *values)
            for nid, s in states.items()
            if nid in prior and (values := mutable_values(s)) != prior[nid].mutable
        ]
    )
    new_channels, changed_channels = _channel_rows(prior, states)
    await writer.insert_channels(new_channels)
    await writer.upsert_channels(changed_channels)
    await writer.insert_deliveries([p.delivery for p in fresh if p.delivery is not None])
    deltas = _deltas(partition, fresh, prior, states)
    if stat_sink is not None:
        stat_sink.update(deltas)
    else:
        await writer.add_user_stats(deltas.user_rows())
        await writer.add_stats(deltas.counter_rows())
    return len(fresh)


def prepare(partition: int, offset: int, env: Envelope, data: dict[str, Any] | None = None) -> Prepared:
    """The event's own rows, checked: raises if this event alone cannot be applied.

    ``data``: the event's ``data`` object as read from the log without its null members
    (``projections.reader.read_with_data``), if at hand: the ledger keeps it as is, instead
    of rebuilding it from the typed event.
    """
    ledger = _ledger_row(partition, offset, env, data)
    # Serialised once here (and reused by the Postgres writer), so that data no database or
    # JSON encoder accepts (NaN, nesting beyond the encoder's stack) is this event's failure.
    ledger["data_json"] = _encode(ledger["data"])
    delivery = deliveries.delivery_row(env)
    # Ids are checked here (the usual way an event does not fit); every other limit is the
    # database's: a batch it refuses is applied one event at a time to find the culprit.
    reason = _ledger_too_long(ledger)
    event = env.data
    if reason is None and isinstance(event, _CREATING):
        if max(len(event.notification_id or ""), len(event.user_id or "")) > _NOTIFICATION_ID_LIMIT:
            reason = too_long(NotificationRow, {"id": event.notification_id, "user_id": event.user_id})
    elif reason is None and isinstance(event, devices.DEVICE_EVENTS):
        device = {k: getattr(event, k, None) for k in ("device_token", "user_id", "platform", "name")}
        reason = too_long(DeviceRow, device)
    elif reason is None and isinstance(event, ContactUpdated):
        reason = too_long(ContactRow, {"user_id": event.user_id, "email": event.email})
    if reason is not None:
        raise ValueError(reason)
    return Prepared(offset, env, ledger, delivery)


_LEDGER_STRINGS = ("event_id", "type", "subject", "user_id", "source", "correlation_id")


def _shortest(table: Any, names: tuple[str, ...]) -> int:
    """The shortest length limit among the string columns ``names`` of ``table``."""
    limits = [c.type.length for c in table.__table__.columns if c.name in names and isinstance(c.type, String)]
    return min(n for n in limits if n is not None)


_LEDGER_SHORTEST = _shortest(EventRow, _LEDGER_STRINGS)
"""The shortest limit of the ledger's string columns: values no longer than it all fit."""
_NOTIFICATION_ID_LIMIT = _shortest(NotificationRow, ("id", "user_id"))


def _ledger_too_long(ledger: dict[str, Any]) -> str | None:
    """``too_long(EventRow, ledger)``, answered at once when every value is short (the usual case)."""
    try:
        longest = max(
            len(ledger["event_id"]),
            len(ledger["type"]),
            len(ledger["subject"] or ""),
            len(ledger["user_id"] or ""),
            len(ledger["source"]),
            len(ledger["correlation_id"] or ""),
        )
    except TypeError:  # not a string: the full check says what it makes of it
        longest = _LEDGER_SHORTEST + 1
    return None if longest <= _LEDGER_SHORTEST else too_long(EventRow, ledger)


_encode_slow = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _encode(value: Any) -> str:
    """Compact JSON text of ``value``: orjson, or the standard library for what orjson refuses
    (nesting past 255 levels, integers beyond 64 bits). NaN and infinities never get here
    (``projections.reader`` refuses them; orjson would write them as null)."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return _encode_slow(value)


_CREATING = (
    NotificationAccepted,
    NotificationRejected,
    NotificationRateLimited,
    NotificationDuplicate,
    BulkTargetRefused,
)
"""Events that create a notification row."""


@dataclass(frozen=True, slots=True)
class _Prior:
    """What a notification looked like before the batch (for the diff and the stat deltas)."""

    mutable: tuple[Any, ...]
    channels: dict[str, tuple[Any, ...]]
    contributions: _Contributions

    @staticmethod
    def of(state: NotificationState) -> _Prior:
        return _Prior(
            mutable_values(state),
            {name: channel_values(ch) for name, ch in state.channel_states.items()},
            _contributions(state),
        )


_Contributions = tuple[tuple[int, ...], tuple[tuple[str, str], ...]]
"""``contributions(state)`` split: positions in a ``user_stats`` row, and the ``(metric, key)``
of the others (counters without a column)."""
_NOTHING: _Contributions = ((), ())
_CONTRIBUTIONS: dict[tuple[Any, ...], _Contributions] = {}
_CONTRIBUTIONS_LIMIT = 4096
"""Bound of ``_CONTRIBUTIONS`` (statuses x priorities x channel states: a few hundred in practice)."""


def _contributions(state: NotificationState) -> _Contributions:
    """``contributions(state)``, split (``_Contributions``), from a cache keyed by what it depends
    on: the status, the priority, whether read, whether deleted, each channel's state. Computing
    the list, its strings and lookups per notification was most of a batch's stat folding."""
    if state.deleted_at is not None:
        return _NOTHING
    key = (
        state.status,
        state.priority,
        state.read_at is None,
        *[(n, c.state) for n, c in state.channel_states.items()],
    )
    found = _CONTRIBUTIONS.get(key)
    if found is None:
        positions, others = [], []
        for pair in contributions(state):
            position = stats.USER_COLUMNS.get(pair)
            if position is None:
                others.append(pair)
            else:
                positions.append(position)
        found = (tuple(positions), tuple(others))
        if len(_CONTRIBUTIONS) < _CONTRIBUTIONS_LIMIT:
            _CONTRIBUTIONS[key] = found
    return found


def _channel_rows(prior: dict[str, _Prior], states: States) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Channel rows of new notifications, and changed channel rows of existing ones."""
    new, changed = [], []
    for nid, s in states.items():
        old = prior.get(nid)
        for name, ch in s.channel_states.items():
            values = channel_values(ch)
            # A channel row always has a time: the notification's creation when nothing happened yet.
            row = (nid, name, *values[:-1], ch.updated_at or s.created_at)
            if old is None:
                new.append(row)
            elif name not in old.channels or old.channels[name] != values:
                changed.append(row)
    return new, changed


def _deltas(partition: int, fresh: Sequence[Prepared], prior: dict[str, _Prior], states: States) -> stats.Deltas:
    """The batch's counter deltas: per user, and their sum in the partition's global scope.

    A notification whose contributions did not change is skipped; the others add theirs
    (and take back the old ones) as positions of the user's ``user_stats`` row, summed per
    ``(user, position)``; counters without a column (the latency histogram) go to the user's
    scope in ``stat_counters``. The partition's global counters are the sums per position.
    """
    users: dict[tuple[str, int], int] = {}
    others: dict[tuple[str, str, str], int] = {}
    get, other, column = users.get, others.get, stats.USER_COLUMNS.get
    for p in fresh:
        event = p.env.data
        if isinstance(event, DeliverySucceeded):
            bucket = str(stats.latency_bucket(event.latency_ms))
            position = column(("latency", bucket))
            if position is None:
                key = (event.user_id, "latency", bucket)
                others[key] = other(key, 0) + 1
            else:
                at = (event.user_id, position)
                users[at] = get(at, 0) + 1
    for nid, state in states.items():
        now = _contributions(state)
        old = prior.get(nid)
        user = state.user_id
        if old is not None:
            if old.contributions == now:
                continue
            positions, pairs = old.contributions
            for position in positions:
                at = (user, position)
                users[at] = get(at, 0) - 1
            for metric, name in pairs:
                key = (user, metric, name)
                others[key] = other(key, 0) - 1
        positions, pairs = now
        for position in positions:
            at = (user, position)
            users[at] = get(at, 0) + 1
        for metric, name in pairs:
            key = (user, metric, name)
            others[key] = other(key, 0) + 1
    deltas = stats.Deltas()
    counters = deltas.counters
    part = stats.partition_scope(partition)
    by_position = [0] * stats.USER_WIDTH
    moved = {at: n for at, n in users.items() if n}
    for (_, position), n in moved.items():
        by_position[position] += n
    deltas.users.update(moved)
    for position, n in enumerate(by_position):
        if n:
            _, metric, name = USER_COUNTERS[position]
            counters[(part, metric, name)] += n
    for (user, metric, name), n in others.items():
        if n:
            counters[(stats.user_scope(user), metric, name)] = n
            counters[(part, metric, name)] += n
    return deltas


def _ledger_row(partition: int, offset: int, env: Envelope, data: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "event_id": env.id,
        "type": env.type,
        "subject": notification_id_of(env) or env.subject,
        "user_id": env.userid or getattr(env.data, "user_id", None),
        "source": env.source,
        "time": env.time,
        "correlation_id": env.correlationid,
        "partition": partition,
        "offset": offset,
        "data": event_to_data(env.data) if data is None else data,
    }


_MASKS: dict[tuple[str, ...], int] = {}


def _channel_mask(channels: list[str]) -> int:
    """``channel_mask(channels)``, computed once per channel list (they are few; bounded all the same)."""
    key = tuple(channels)
    mask = _MASKS.get(key)
    if mask is None:
        mask = channel_mask(channels)
        if len(_MASKS) < 1024:
            _MASKS[key] = mask
    return mask


def _row(s: NotificationState) -> dict[str, Any]:
    return {
        "id": s.id,
        "user_id": s.user_id,
        "title": s.title,
        "body": s.body,
        "priority": s.priority,
        "channels": list(s.channels),
        "channel_mask": _channel_mask(s.channels),
        "category": s.category,
        "data": s.data,
        "status": s.status,
        "attempts": s.attempts,
        "error": s.error,
        "device_token": s.device_token,
        "correlation_id": s.correlation_id,
        "idempotency_key": s.idempotency_key,
        "collapse_key": s.collapse_key,
        "created_at": s.created_at,
        "delivered_at": s.delivered_at,
        "read_at": s.read_at,
        "deleted_at": s.deleted_at,
        "expires_at": s.expires_at,
        "deliver_after": s.deliver_after,
    }
