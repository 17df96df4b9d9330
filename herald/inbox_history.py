"""A user's inbox as it was at an instant, folded from log records (pure: no I/O).

The fold is the projector's own: ``projections.reader.read`` turns a record into an
envelope exactly as the projector reads it, and ``projections.notifications.fold``
applies it to the snapshots, the function the projector's batches use. Nothing here
re-implements a rule, so the answer cannot drift from the read model. Like the projector,
an event id seen before changes nothing, and a record it cannot read is skipped.
(This lives in ``herald/`` rather than ``engine/`` because ``engine/`` may not import
``projections/``; it has no I/O all the same.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from projections.notifications import NotificationState, States, fold
from projections.reader import Unreadable, read


@dataclass(frozen=True, slots=True)
class LoggedRecord:
    """What the fold needs of a Kafka record."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(slots=True)
class History:
    """The fold's result and what it skipped."""

    states: States
    applied: int = 0
    unreadable: int = 0


def inbox_at(records: Iterable[LoggedRecord], user_id: str, as_of_ms: int | None, last_offset: int | None) -> History:
    """The user's notifications after every record up to ``as_of_ms`` / ``last_offset`` (in offset order)."""
    key = user_id.encode()
    history = History({})
    seen: set[str] = set()
    for record in records:
        if record.key != key:
            continue
        if as_of_ms is not None and record.timestamp_ms > as_of_ms:
            continue
        if last_offset is not None and record.offset > last_offset:
            continue
        try:
            env = read(record.value, record.headers)
        except Unreadable:
            history.unreadable += 1
            continue
        if env.id in seen:
            continue  # the projector's ledger: an event applied once
        seen.add(env.id)
        fold(history.states, env)
        history.applied += 1
    # Events keyed by this user about someone else's notification are not in this inbox.
    history.states = {nid: s for nid, s in history.states.items() if s.user_id == user_id}
    return history


def view(state: NotificationState) -> dict[str, Any]:
    """One notification of the inbox as JSON (the read model's columns that change, and where it went)."""
    return {
        "id": state.id,
        "title": state.title,
        "priority": state.priority,
        "status": state.status,
        "created_at": _time(state.created_at),
        "read_at": _time(state.read_at),
        "deleted_at": _time(state.deleted_at),
        "delivered_at": _time(state.delivered_at),
        "attempts": state.attempts,
        "error": state.error,
        "channels": {
            name: {
                "state": ch.state,
                "attempts": ch.attempts,
                "target": ch.target,
                "provider_id": ch.provider_id,
                "error": ch.error,
                "delivered_at": _time(ch.delivered_at),
            }
            for name, ch in sorted(state.channel_states.items())
        },
    }


def lines(user_id: str, as_of: str, states: States, *, show_deleted: bool) -> list[str]:
    """The inbox for a terminal, oldest first."""
    items = sorted(states.values(), key=lambda s: (s.created_at, s.id))
    shown = [s for s in items if show_deleted or s.deleted_at is None]
    unread = sum(1 for s in shown if s.read_at is None and s.deleted_at is None)
    out = [f"inbox of {user_id} as of {as_of}: {len(shown)} notification(s), {unread} unread"]
    for s in shown:
        mark = "deleted" if s.deleted_at else ("read" if s.read_at else "unread")
        out.append(f"  {_time(s.created_at)}  {s.id}  [{s.status}, {mark}]  {s.title}")
        for name, ch in sorted(s.channel_states.items()):
            where = f" to {ch.target}" if ch.target else ""
            out.append(f"      {name}: {ch.state}{where}")
    hidden = len(items) - len(shown)
    if hidden:
        out.append(f"  ({hidden} deleted notification(s) not shown; --deleted shows them)")
    return out


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")
