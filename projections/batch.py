"""Applying one batch of events to every read model with set-based writes.

Steps, all inside the caller's transaction:
1. each event is checked on its own (its rows fit their columns, its data serialises):
   one that cannot be applied is set aside as skipped (``projections.poison``), the rest
   of the batch goes on;
2. the ledger (``projected_events``) filters out events applied before: re-applying an
   event, even after offsets were reset, changes nothing;
3. the notifications the batch touches are loaded once, the batch is folded into them in
   memory (``projections.notifications.fold``), and only the differences are written,
   each kind of write as one multi-row statement;
4. stat counters move by the difference of what the touched notifications contribute
   before and after.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from projections import deliveries, devices, stats
from projections.models import ChannelStateRow, ContactRow, DeliveryRow, DeviceRow, EventRow, NotificationRow
from projections.notifications import (
    MUTABLE_FIELDS,
    ChannelState,
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
from projections.sql import among, insert_rows
from schemas.codec import event_to_data
from schemas.envelope import Envelope
from schemas.events import (
    ContactUpdated,
    DeliverySucceeded,
    NotificationAccepted,
    NotificationDuplicate,
    NotificationRateLimited,
    NotificationRejected,
)

Positioned = tuple[int, Envelope]
"""An event and its offset in the partition."""


@dataclass(slots=True)
class Outcome:
    """What applying a batch did."""

    fresh: int = 0
    """Events applied now (not seen before)."""
    skipped: list[Skipped] = field(default_factory=list)
    """Events that could not be applied, in offset order."""


@dataclass(slots=True)
class _Prepared:
    offset: int
    env: Envelope
    ledger: dict[str, Any]
    delivery: dict[str, Any] | None


async def apply_batch(conn: AsyncConnection, partition: int, batch: Sequence[Positioned]) -> int:
    """Apply ``batch`` (one partition, offset order); return how many events were new."""
    return (await apply_events(conn, partition, batch)).fresh


async def apply_events(conn: AsyncConnection, partition: int, batch: Sequence[Positioned]) -> Outcome:
    """Apply ``batch`` (one partition, offset order), setting aside the events that cannot be applied."""
    outcome = Outcome()
    prepared: list[_Prepared] = []
    for offset, env in batch:
        try:
            prepared.append(_prepare(partition, offset, env))
        except Exception as exc:  # noqa: BLE001 - a failure of one event's checks is that event's alone
            outcome.skipped.append(Skipped(offset, env.id, env.type, "apply", describe(exc)))
    fresh = await _unseen(conn, prepared)
    if not fresh:
        return outcome
    touched = {nid for p in fresh if (nid := notification_id_of(p.env)) is not None}
    while True:
        states = await load_states(conn, touched)
        prior = {nid: _Prior.of(state) for nid, state in states.items()}
        failed = _fold_all(states, fresh)
        if failed is None:
            break
        # A fold error may leave a snapshot half-changed: drop the event, fold again from the stored rows.
        index, error = failed
        bad = fresh.pop(index)
        outcome.skipped.append(Skipped(bad.offset, bad.env.id, bad.env.type, "apply", describe(error)))
        outcome.skipped.sort(key=lambda s: s.offset)
        if not fresh:
            return outcome
    await insert_rows(
        conn,
        EventRow,
        [p.ledger for p in fresh],
        lambda stmt: stmt.on_conflict_do_nothing(index_elements=["event_id"]),
    )
    envelopes = [p.env for p in fresh]
    for env in envelopes:
        if isinstance(env.data, devices.DEVICE_EVENTS):
            await devices.apply_device(conn, env)
    await devices.apply_contacts(conn, envelopes)
    await _write_notifications(conn, prior, states)
    await deliveries.insert(conn, [p.delivery for p in fresh if p.delivery is not None])
    await stats.add(conn, _deltas(partition, fresh, prior, states))
    outcome.fresh = len(fresh)
    return outcome


def _prepare(partition: int, offset: int, env: Envelope) -> _Prepared:
    """The event's own rows, checked: raises if this event alone cannot be applied."""
    ledger = _ledger_row(partition, offset, env)
    # Serialised once here so that data no database or JSON encoder accepts (too deep, NaN)
    # is this event's failure, not its batch's.
    json.dumps(ledger["data"], separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    delivery = deliveries.delivery_row(env)
    problems = [too_long(EventRow, ledger)]
    if delivery is not None:
        problems.append(too_long(DeliveryRow, delivery))
    event = env.data
    if isinstance(event, NotificationAccepted):
        problems.append(too_long(NotificationRow, _content(env, event)))
    elif isinstance(event, NotificationRejected | NotificationRateLimited | NotificationDuplicate):
        problems.append(too_long(NotificationRow, {"id": event.notification_id, "user_id": event.user_id}))
    elif isinstance(event, devices.DEVICE_EVENTS):
        device = {k: getattr(event, k, None) for k in ("device_token", "user_id", "platform", "name")}
        problems.append(too_long(DeviceRow, device))
    elif isinstance(event, ContactUpdated):
        problems.append(too_long(ContactRow, {"user_id": event.user_id, "email": event.email}))
    reasons = [p for p in problems if p is not None]
    if reasons:
        raise ValueError("; ".join(reasons))
    return _Prepared(offset, env, ledger, delivery)


def _content(env: Envelope, event: NotificationAccepted) -> dict[str, Any]:
    return {
        "id": event.notification_id,
        "user_id": event.user_id,
        "priority": event.priority,
        "category": event.category,
        "device_token": event.device_token,
        "correlation_id": env.correlationid,
        "idempotency_key": event.idempotency_key,
        "collapse_key": event.collapse_key,
    }


def _fold_all(states: States, batch: Sequence[_Prepared]) -> tuple[int, Exception] | None:
    for index, p in enumerate(batch):
        try:
            fold(states, p.env)
        except Exception as exc:  # noqa: BLE001 - one event's failure: the caller skips it, folds again
            return index, exc
    return None


@dataclass(frozen=True, slots=True)
class _Prior:
    """What a notification looked like before the batch (for the diff and the stat deltas)."""

    mutable: tuple[Any, ...]
    channels: dict[str, tuple[Any, ...]]
    contributions: list[tuple[str, str]]

    @staticmethod
    def of(state: NotificationState) -> _Prior:
        return _Prior(
            mutable_values(state),
            {name: channel_values(ch) for name, ch in state.channel_states.items()},
            contributions(state),
        )


def _deltas(partition: int, fresh: Sequence[_Prepared], prior: dict[str, _Prior], states: States) -> Counter[stats.Key]:
    deltas: Counter[stats.Key] = Counter()
    for p in fresh:
        event = p.env.data
        if isinstance(event, DeliverySucceeded):
            bucket = str(stats.latency_bucket(event.latency_ms))
            deltas[(stats.user_scope(event.user_id), "latency", bucket)] += 1
            deltas[(stats.partition_scope(partition), "latency", bucket)] += 1
    for nid, state in states.items():
        old = prior.get(nid)
        user, part = stats.user_scope(state.user_id), stats.partition_scope(partition)
        for metric, key in old.contributions if old is not None else ():
            deltas[(user, metric, key)] -= 1
            deltas[(part, metric, key)] -= 1
        for metric, key in contributions(state):
            deltas[(user, metric, key)] += 1
            deltas[(part, metric, key)] += 1
    return deltas


async def _unseen(conn: AsyncConnection, batch: Sequence[_Prepared]) -> list[_Prepared]:
    ids = list({p.env.id for p in batch})
    known: set[str] = set()
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        known.update(
            str(i)
            for i in (
                await conn.execute(select(EventRow.event_id).where(among(conn, EventRow.event_id, chunk)))
            ).scalars()
        )
    out: list[_Prepared] = []
    for p in batch:
        if p.env.id not in known:
            known.add(p.env.id)  # the same event twice inside one batch counts once
            out.append(p)
    return out


def _ledger_row(partition: int, offset: int, env: Envelope) -> dict[str, Any]:
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
        "data": event_to_data(env.data),
    }


async def load_states(conn: AsyncConnection, ids: set[str]) -> States:
    """Snapshots of the notifications ``ids`` (missing ones are simply absent).

    Only what the fold reads: content columns (``data`` above all, which may be nested
    deeply) are written once on acceptance and never loaded back.
    """
    states: States = {}
    if not ids:
        return states
    id_list = sorted(ids)
    columns = [getattr(NotificationRow, k) for k in _STATE_FIELDS]
    for start in range(0, len(id_list), 1000):
        chunk = id_list[start : start + 1000]
        for row in (await conn.execute(select(*columns).where(among(conn, NotificationRow.id, chunk)))).all():
            r = row._mapping
            states[r["id"]] = NotificationState(**{k: r[k] for k in _STATE_FIELDS})
        for channel_row in (
            await conn.execute(select(ChannelStateRow).where(among(conn, ChannelStateRow.notification_id, chunk)))
        ).all():
            r = channel_row._mapping
            state = states.get(r["notification_id"])
            if state is not None:
                state.channel_states[r["channel"]] = ChannelState(**{k: r[k] for k in _CHANNEL_FIELDS})
    return states


_STATE_FIELDS = ("id", "user_id", "status", "created_at", "priority", *MUTABLE_FIELDS[1:])
_CONTENT_FIELDS = (
    "title",
    "body",
    "category",
    "device_token",
    "correlation_id",
    "idempotency_key",
    "collapse_key",
    "expires_at",
    "deliver_after",
)
_CHANNEL_FIELDS = (
    "state",
    "attempts",
    "target",
    "provider_id",
    "error",
    "delivered_at",
    "next_attempt_at",
    "updated_at",
)


async def _write_notifications(conn: AsyncConnection, prior: dict[str, _Prior], states: States) -> None:
    # New and changed notifications in one upsert: new rows are inserted whole, existing
    # ones only get their mutable columns (content never changes after acceptance).
    new = [_row(s) for nid, s in states.items() if nid not in prior]
    changed = [
        {"id": nid, **{k: getattr(s, k) for k in MUTABLE_FIELDS}}
        for nid, s in states.items()
        if nid in prior and mutable_values(s) != prior[nid].mutable
    ]
    await insert_rows(conn, NotificationRow, new, lambda stmt: stmt.on_conflict_do_nothing(index_elements=["id"]))
    if changed:
        await _update_mutable(conn, changed)
    channel_rows = []
    for nid, s in states.items():
        old = prior.get(nid)
        for name, ch in s.channel_states.items():
            if old is None or old.channels.get(name) != channel_values(ch):
                channel_rows.append({"notification_id": nid, "channel": name, **_channel(ch, s)})
    await insert_rows(
        conn,
        ChannelStateRow,
        channel_rows,
        lambda stmt: stmt.on_conflict_do_update(
            index_elements=["notification_id", "channel"],
            set_={k: getattr(stmt.excluded, k) for k in _CHANNEL_FIELDS},
        ),
    )


async def _update_mutable(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    # The rows exist (they were loaded in this transaction): only the mutable columns are sent.
    params = [{"b_id": r["id"], **{f"b_{k}": r[k] for k in MUTABLE_FIELDS}} for r in rows]
    stmt = (
        update(NotificationRow)
        .where(NotificationRow.id == bindparam("b_id"))
        .values({k: bindparam(f"b_{k}") for k in MUTABLE_FIELDS})
    )
    await conn.execute(stmt, params)


def _row(s: NotificationState) -> dict[str, Any]:
    row = {k: getattr(s, k) for k in (*_STATE_FIELDS, *_CONTENT_FIELDS)}
    row.update(channels=list(s.channels), data=s.data, channel_mask=channel_mask(s.channels))
    return row


def _channel(ch: ChannelState, s: NotificationState) -> dict[str, Any]:
    values = {k: getattr(ch, k) for k in _CHANNEL_FIELDS}
    values["updated_at"] = values["updated_at"] or s.created_at
    return values
