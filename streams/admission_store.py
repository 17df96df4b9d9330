"""Admission state with O(1) cost per request: one changelog entry per used request key.

The ``herald-dedupe`` table maps ``user + key`` to the key's first use
``[original_id, at, source, priority]`` (``priority`` only on the entry of the
notification id itself: one per admission). It is the whole persistent admission
state: a request reads the entries of its own keys (at most two) and an acceptance
writes at most two small entries, however many requests the user made in the window.

The rate-limit windows are derived from it: every admission inside the dedupe window
has its entry, and the rate window is never longer than the dedupe window, so the last
``limit`` admissions per user and priority are kept in memory, updated as requests are
admitted and rebuilt from the table after every rebalance (and on start, once the
changelog is recovered). Entries leave the table when they leave the dedupe window: each
is deleted while the agent processes a record of its partition (table writes must happen
in the stream of the partition they belong to, so the changelog stays co-partitioned).

The decisions are still ``engine.admission.decide_admission`` and ``evolve``: this class
only builds their ``Admission`` state from the entries that matter for one request and
writes back what changed. ``admit`` (ingest's step) takes the common case itself: no entry
of the request's keys in the table, and its id not in the rate window. It then decides and
writes exactly what those functions would (a property test compares it with their fold),
on a window changed in place (``engine.rate_limit.Slots``) instead of a copy of it per
request; anything else (a duplicate, a replayed record, an entry past the window not yet
deleted) goes through ``view``, ``decide_admission``, ``evolve`` and ``save``.

Over a Faust table, a write (``save``, ``expire``) changes the local store at once and
keeps the entry's changelog record in a ``streams.changelog_outbox.ChangelogOutbox`` until
``send_changes`` hands it to the app's producer directly, in the order written, instead of
through Faust's send buffer (a loop pass and a future message per record, and a flush task
per buffered record past 100: the "producer buffer full" of a bulk).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.admission import Admission, AdmissionPolicy, decide_admission, evolve, rate_limited, request_keys
from engine.dedupe import Seen, SeenKeys
from engine.rate_limit import Slots, Window
from schemas.envelope import Envelope
from schemas.events import NotificationAccepted
from streams.changelog_outbox import ChangelogOutbox

log = logging.getLogger(__name__)

SEPARATOR = "\x1f"
"""Between user and key in a table key (a control character: never in a valid id)."""
EXPIRE_PER_RECORD = 8
"""Expired entries deleted at most per processed record (bounded work per record)."""


@dataclass(slots=True)
class _Partition:
    expiry: deque[tuple[float, str]]


class AdmissionStore:
    """Reads and writes one user's admission state through the ``herald-dedupe`` table."""

    def __init__(self, table: Any, policy: AdmissionPolicy) -> None:
        self._table = table
        self._policy = policy
        self._windows: dict[tuple[str, str], Window | Slots] = {}
        """Per user and priority, its last admissions: a ``Window`` as ``save`` wrote it, or
        ``Slots`` once ``admit`` changed it in place."""
        self._partitions: dict[int, _Partition] = {}
        self._built = False
        self._outbox = ChangelogOutbox(table) if getattr(table, "changelog_topic", None) is not None else None
        """The table's unsent changelog records; ``None`` for a plain mapping (its writes are the whole story)."""

    def invalidate(self) -> None:
        """Forget the derived state (call on rebalance: another worker may have written meanwhile)."""
        self._built = False
        self._windows.clear()
        self._partitions.clear()

    def view(self, user: str, keys: Iterable[str], priority: str) -> Admission:
        """The state ``decide_admission`` needs for a request of ``user`` with these keys."""
        self._ensure_built()
        seen = []
        table = self._table
        for key in keys:
            table_key = _table_key(user, key)
            # Most keys are new: a membership test spares a Faust table the KeyError of a miss.
            raw = table[table_key] if table_key in table else None  # noqa: SIM401
            if raw is not None:
                seen.append((key, Seen(str(raw[0]), float(raw[1]), str(raw[2]))))
        window = self._windows.get((user, priority))
        if isinstance(window, Slots):
            window = window.window()
        return Admission(SeenKeys(tuple(seen)), {priority: window} if window is not None else {})

    def admit(
        self, decided: Envelope, accepted: NotificationAccepted, *, source: str, partition: int, now: datetime
    ) -> Envelope:
        """The outcome of ``decided`` (the envelope of ``accepted``), its changes written:
        ``decide_admission`` then ``evolve`` and ``save``, with the common case taken here."""
        self._ensure_built()
        user = accepted.user_id
        nid = accepted.notification_id
        keys = request_keys(accepted)
        table = self._table
        table_keys = [_table_key(user, key) for key in keys]
        for table_key in table_keys:
            if table_key in table:  # a key used before (live or not yet deleted): the general path
                return self._admit_generally(decided, keys, source=source, partition=partition, now=now)
        priority = accepted.priority
        policy = self._policy
        limit = policy.limits[priority]
        at = now.timestamp()
        slots = self._slots(user, priority)
        if slots is not None:
            if slots.holds(nid):  # the same notification admitted again: the general path
                return self._admit_generally(decided, keys, source=source, partition=partition, now=now)
            verdict = slots.check(limit, now=at, notification_id=nid)
            if not verdict.allowed:
                return rate_limited(decided, accepted, limit, verdict.retry_after_seconds, now=now)
        else:
            slots = self._windows[(user, priority)] = Slots()
        slots.admit(limit, now=at, notification_id=nid)
        expiry = self._partition(partition).expiry
        expires = at + policy.dedupe_window_seconds
        for key, table_key in zip(keys, table_keys, strict=True):
            # The notification id's own entry carries the priority: it is the admission.
            self._write(table_key, [nid, at, source, priority if key == nid else None], partition)
            expiry.append((expires, table_key))
        return decided

    def _admit_generally(
        self, decided: Envelope, keys: tuple[str, ...], *, source: str, partition: int, now: datetime
    ) -> Envelope:
        accepted = decided.data
        if not isinstance(accepted, NotificationAccepted):
            return decided
        state = self.view(accepted.user_id, keys, accepted.priority)
        outcome = decide_admission(state, decided, source=source, policy=self._policy, now=now)
        after = evolve(state, outcome, source=source, policy=self._policy)
        if after is not state:
            self.save(accepted.user_id, state, after, partition=partition)
        return outcome

    def _slots(self, user: str, priority: str) -> Slots | None:
        """The window of ``user`` at ``priority`` to change in place, if any."""
        window = self._windows.get((user, priority))
        if window is None or isinstance(window, Slots):
            return window
        slots = self._windows[(user, priority)] = Slots(window.admitted)
        return slots

    def save(self, user: str, before: Admission, after: Admission, *, partition: int) -> None:
        """Write what ``evolve`` changed: new key entries (changelog) and the rate windows (memory)."""
        window_seconds = self._policy.dedupe_window_seconds
        admitted: dict[str, str] = {}
        for priority, window in after.windows.items():
            if before.windows.get(priority) != window:
                self._windows[(user, priority)] = window
                if window.admitted:
                    admitted[window.admitted[-1][1]] = priority
        for key, seen in after.seen.keys:
            if before.seen.get(key) == seen:
                continue
            table_key = _table_key(user, key)
            # The notification id's own entry carries the priority: it is the admission.
            admitted_as = admitted.get(key) if key == seen.original_id else None
            self._write(table_key, [seen.original_id, seen.at, seen.source, admitted_as], partition)
            self._partition(partition).expiry.append((seen.at + window_seconds, table_key))

    def expire(self, partition: int, *, now: float) -> int:
        """Delete up to ``EXPIRE_PER_RECORD`` entries of ``partition`` that left the window."""
        self._ensure_built()
        state = self._partitions.get(partition)
        if state is None:
            return 0
        horizon = now - self._policy.dedupe_window_seconds
        removed = 0
        while state.expiry and state.expiry[0][0] <= now and removed < EXPIRE_PER_RECORD:
            _, table_key = state.expiry.popleft()
            raw = self._table.get(table_key)
            if raw is None or float(raw[1]) > horizon:
                continue  # already gone, or used again later (a newer entry expires later)
            self._write(table_key, None, partition)
            removed += 1
            if raw[3]:
                self._prune_window(table_key.split(SEPARATOR, 1)[0], str(raw[3]), now=now)
        return removed

    async def send_changes(self) -> None:
        """Hand the changelog records written so far to the app's producer, in order (no ack awaited).

        The ingest agents (one per priority) share the store: one of them at a time hands
        records over, so records keep the order they were written in, whichever agent wrote
        them, and a caller returns only once its own records are with the producer.
        """
        if self._outbox is not None:
            await self._outbox.send()

    def __len__(self) -> int:
        return len(self._table)

    def _write(self, table_key: str, value: list[Any] | None, partition: int) -> None:
        """Set (``value``) or delete (``None``) one entry, its changelog record kept for ``send_changes``."""
        outbox = self._outbox
        if outbox is not None:
            outbox.write(table_key, value, partition)
        elif value is None:  # a plain mapping
            del self._table[table_key]
        else:
            self._table[table_key] = value

    def _partition(self, partition: int) -> _Partition:
        state = self._partitions.get(partition)
        if state is None:
            state = self._partitions[partition] = _Partition(deque())
        return state

    def _prune_window(self, user: str, priority: str, *, now: float) -> None:
        slots = self._slots(user, priority)
        if slots is None:
            return
        limit = self._policy.limits[priority]
        slots.forget_until(now - limit.window_seconds)
        if not slots:
            del self._windows[(user, priority)]

    def _ensure_built(self) -> None:
        if self._built:
            return
        # One pass over the recovered table: rate windows and expiry queues of every partition.
        admissions: dict[tuple[str, str], list[tuple[float, str]]] = {}
        expiries: dict[int, list[tuple[float, str]]] = {}
        window_seconds = self._policy.dedupe_window_seconds
        for table_key, raw in list(self._table.items()):
            try:
                user = table_key.split(SEPARATOR, 1)[0]
                at, source, priority = float(raw[1]), str(raw[2]), raw[3]
                partition = int(source.rsplit("/", 2)[-2])
            except (AttributeError, IndexError, TypeError, ValueError):
                log.warning("unreadable admission entry ignored", extra={"key": repr(table_key)[:200]})
                continue
            expiries.setdefault(partition, []).append((at + window_seconds, table_key))
            if priority:
                admissions.setdefault((user, str(priority)), []).append((at, str(raw[0])))
        self._windows.clear()
        for (user, priority), items in admissions.items():
            limit = self._policy.limits.get(priority)
            if limit is None:
                continue
            items.sort()
            self._windows[(user, priority)] = Window(tuple(items[-limit.limit :]))
        self._partitions = {p: _Partition(deque(sorted(items))) for p, items in expiries.items()}
        self._built = True


def _table_key(user: str, key: str) -> str:
    return f"{user}{SEPARATOR}{key}"
