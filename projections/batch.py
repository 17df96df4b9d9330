"""Applying one batch of events to every read model with set-based writes.

Steps, all inside the caller's transaction:
1. the ledger (``projected_events``) filters out events applied before: re-applying an
   event, even after offsets were reset, changes nothing;
2. the notifications the batch touches are loaded once, the batch is folded into them in
   memory (``projections.notifications.fold``), and only the differences are written,
   each kind of write as one multi-row statement;
3. stat counters move by the difference of what the touched notifications contribute
   before and after.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from projections import deliveries, devices, stats
from projections.models import ChannelStateRow, EventRow, NotificationRow
from projections.notifications import (
    ChannelState,
    NotificationState,
    States,
    channel_mask,
    contributions,
    fold,
    notification_id_of,
)
from projections.sql import among, insert_rows
from schemas.codec import event_to_data
from schemas.envelope import Envelope
from schemas.events import DeliverySucceeded

Positioned = tuple[int, Envelope]
"""An event and its offset in the partition."""

_MUTABLE = ("status", "attempts", "error", "delivered_at", "read_at", "deleted_at")


async def apply_batch(conn: AsyncConnection, partition: int, batch: Sequence[Positioned]) -> int:
    """Apply ``batch`` (one partition, offset order); return how many events were new."""
    fresh = await _unseen(conn, batch)
    if not fresh:
        return 0
    await insert_rows(
        conn,
        EventRow,
        [_ledger_row(partition, offset, env) for offset, env in fresh],
        lambda stmt: stmt.on_conflict_do_nothing(index_elements=["event_id"]),
    )
    envelopes = [env for _, env in fresh]
    touched = {nid for env in envelopes if (nid := notification_id_of(env)) is not None}
    before = await load_states(conn, touched)
    after: States = {nid: state.copy() for nid, state in before.items()}
    delivery_rows: list[dict[str, Any]] = []
    deltas: Counter[stats.Key] = Counter()
    for env in envelopes:
        fold(after, env)
        row = deliveries.delivery_row(env)
        if row is not None:
            delivery_rows.append(row)
        if isinstance(env.data, DeliverySucceeded):
            bucket = str(stats.latency_bucket(env.data.latency_ms))
            deltas[(stats.user_scope(env.data.user_id), "latency", bucket)] += 1
            deltas[(stats.partition_scope(partition), "latency", bucket)] += 1
        if isinstance(env.data, devices.DEVICE_EVENTS):
            await devices.apply_device(conn, env)
    await devices.apply_contacts(conn, envelopes)
    await _write_notifications(conn, before, after)
    await deliveries.insert(conn, delivery_rows)
    for nid, state in after.items():
        old = before.get(nid)
        for metric, key in contributions(old):
            deltas[(stats.user_scope(state.user_id), metric, key)] -= 1
            deltas[(stats.partition_scope(partition), metric, key)] -= 1
        for metric, key in contributions(state):
            deltas[(stats.user_scope(state.user_id), metric, key)] += 1
            deltas[(stats.partition_scope(partition), metric, key)] += 1
    await stats.add(conn, deltas)
    return len(fresh)


async def _unseen(conn: AsyncConnection, batch: Sequence[Positioned]) -> list[Positioned]:
    ids = list({env.id for _, env in batch})
    known: set[str] = set()
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        known.update(
            str(i)
            for i in (
                await conn.execute(select(EventRow.event_id).where(among(conn, EventRow.event_id, chunk)))
            ).scalars()
        )
    out: list[Positioned] = []
    for offset, env in batch:
        if env.id not in known:
            known.add(env.id)  # the same event twice inside one batch counts once
            out.append((offset, env))
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
    """Snapshots of the notifications ``ids`` (missing ones are simply absent)."""
    states: States = {}
    if not ids:
        return states
    id_list = sorted(ids)
    for start in range(0, len(id_list), 1000):
        chunk = id_list[start : start + 1000]
        for row in (await conn.execute(select(NotificationRow).where(among(conn, NotificationRow.id, chunk)))).all():
            r = row._mapping
            states[r["id"]] = NotificationState(
                **{k: r[k] for k in _STATE_FIELDS}, channels=list(r["channels"]), data=dict(r["data"])
            )
        for channel_row in (
            await conn.execute(select(ChannelStateRow).where(among(conn, ChannelStateRow.notification_id, chunk)))
        ).all():
            r = channel_row._mapping
            state = states.get(r["notification_id"])
            if state is not None:
                state.channel_states[r["channel"]] = ChannelState(**{k: r[k] for k in _CHANNEL_FIELDS})
    return states


_STATE_FIELDS = (
    "id",
    "user_id",
    "status",
    "created_at",
    "title",
    "body",
    "priority",
    "category",
    "attempts",
    "error",
    "device_token",
    "correlation_id",
    "idempotency_key",
    "collapse_key",
    "delivered_at",
    "read_at",
    "deleted_at",
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


async def _write_notifications(conn: AsyncConnection, before: States, after: States) -> None:
    # New and changed notifications in one upsert: new rows are inserted whole, existing
    # ones only get their mutable columns (content never changes after acceptance).
    changed = [
        _row(s)
        for nid, s in after.items()
        if nid not in before or any(getattr(s, k) != getattr(before[nid], k) for k in _MUTABLE)
    ]
    await insert_rows(
        conn,
        NotificationRow,
        changed,
        lambda stmt: stmt.on_conflict_do_update(
            index_elements=["id"], set_={k: getattr(stmt.excluded, k) for k in _MUTABLE}
        ),
    )
    channel_rows = []
    for nid, s in after.items():
        old = before.get(nid)
        for name, ch in s.channel_states.items():
            if old is None or old.channel_states.get(name) != ch:
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


def _row(s: NotificationState) -> dict[str, Any]:
    row = {k: getattr(s, k) for k in _STATE_FIELDS}
    row.update(channels=list(s.channels), data=dict(s.data), channel_mask=channel_mask(s.channels))
    return row


def _channel(ch: ChannelState, s: NotificationState) -> dict[str, Any]:
    values = {k: getattr(ch, k) for k in _CHANNEL_FIELDS}
    values["updated_at"] = values["updated_at"] or s.created_at
    return values
