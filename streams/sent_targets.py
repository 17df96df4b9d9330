"""The (notification, target) pairs a sink has handed over, remembered for a bounded time.

Why remember: a work record processed twice (the router re-run after a crash, a
redelivered record, a retry racing a late success) must not send twice. Why forget: the
table would otherwise grow with every notification ever sent. A duplicate can only
arrive within the retry horizon (every backoff delay at its largest jitter plus every
send timeout), so entries live ``ttl`` >= that horizon, then are deleted (a changelog
tombstone: compaction drops them from the topic too).

Faust only lets an agent modify a table while it handles an event, and sends the
change to the changelog partition of that event; so expiry runs in the sink's agent, a
bounded number of deletions per event, for the partition of the event in hand. A
per-partition index (oldest first) makes that O(1) per event; it is rebuilt from the
local store after a rebalance (another worker may have written the partition meanwhile).

Over a Faust table every write (a sent pair, an expiry's tombstone) changes the local
store at once and keeps its changelog record in a ``streams.changelog_outbox.ChangelogOutbox``
until ``send_changes`` hands it to the app's producer directly, in the order written (as
``streams.admission_store`` does), not through Faust's send buffer: a tombstone written
before a re-add of the same pair lands before it, so the changelog, and a table restored
from it, ends with the pair.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

from engine.settings import ConfigError, Settings
from streams.changelog_outbox import ChangelogOutbox

MIN_TTL_SECONDS = 3600.0
"""Default floor: crash recovery and rebalances replay work well within an hour."""
EXPIRE_PER_EVENT = 100
"""Most deletions one processed event pays for (bounds the latency expiry adds)."""


def retry_horizon(settings: Settings) -> float:
    """Longest time between a notification's first send attempt and its last (seconds)."""
    delays = sum(
        min(settings.retry_max_delay_seconds, settings.retry_base_delay_seconds * 2.0 ** (attempt - 1))
        for attempt in range(1, settings.retry_max_attempts)
    )
    return float(delays) * (1 + settings.retry_jitter) + settings.retry_max_attempts * settings.delivery_timeout_seconds


def sent_ttl(settings: Settings) -> float:
    """How long a sent pair is remembered: the configured value, else twice the horizon (at least an hour).

    Raises ``ConfigError`` when the configured value is shorter than the retry horizon:
    a retry could then send a second time.
    """
    horizon = retry_horizon(settings)
    configured = settings.sent_targets_ttl_seconds
    if configured <= 0:
        return max(MIN_TTL_SECONDS, 2 * horizon)
    if configured < horizon:
        raise ConfigError(
            f"HERALD_SENT_TARGETS_TTL_SECONDS={configured:g} is shorter than the retry horizon ({horizon:g}s):"
            " a late retry could send twice"
        )
    return configured


class SentTargets:
    """A sink's sent pairs over a Faust table (key ``notification_id\\x1ftarget``).

    Values are ``{"at": epoch seconds, "p": changelog partition, "id": provider id}``.
    Plain-string values written before expiry existed carry neither: they count as sent
    and are left alone (a finite set: none are written any more).
    """

    def __init__(self, table: Any, ttl: float, *, clock: Callable[[], float] = time.time) -> None:
        self._table = table
        self._ttl = ttl
        self._clock = clock
        self._index: dict[int, deque[tuple[float, str]]] = {}
        self._outbox = ChangelogOutbox(table) if getattr(table, "send_changelog", None) is not None else None
        """The table's unsent changelog records; ``None`` for a plain mapping (its writes are the whole story)."""

    @staticmethod
    def key(notification_id: str, target: str) -> str:
        """The table key of one (notification, target) pair."""
        return f"{notification_id}\x1f{target}"

    def sent(self, key: str) -> bool:
        """Whether ``key`` was handed over within the last ``ttl`` seconds."""
        value = self._table.get(key)
        if value is None:
            return False
        at = value.get("at") if isinstance(value, dict) else None
        return not isinstance(at, int | float) or self._clock() - at < self._ttl

    def add(self, key: str, provider_id: str | None, partition: int) -> None:
        """Remember ``key`` as sent now (call while handling an event of ``partition``)."""
        index = self._partition_index(partition)
        now = self._clock()
        value = {"at": now, "p": partition, "id": provider_id}
        if self._outbox is None:
            self._table[key] = value
        else:  # its changelog record handed over by the next send_changes
            self._outbox.write(key, value, partition)
        index.append((now, key))

    async def add_durably(self, key: str, provider_id: str | None, partition: int) -> None:
        """``add``, and return only once the broker holds the pair's changelog record.

        A plain table write only queues that record (Faust produces it a little later), so a
        worker killed right after a provider's answer lost the pair and its replacement, which
        restores the table from the changelog, sent again. Awaited here, the window of a
        second send is the provider's round trip plus this one produce (docs/reliability.md).

        What the table's ``__setitem__`` does (changelog record, then the local store), the
        record handed to the app's producer directly: the same key and value bytes (the
        changelog topic's own serialisers) to the same partition, without Faust's send buffer
        and per-message bookkeeping (as ``streams.publish.send``). The in-memory store keeps
        no changelog offsets, which is all Faust's callback for the record would record.
        The record goes in the order of every write of this table (``send_changes``), so an
        expiry's tombstone written before it cannot land after it.
        """
        outbox = self._outbox
        if outbox is None:  # a plain mapping (no changelog to wait for)
            self.add(key, provider_id, partition)
            return
        index = self._partition_index(partition)
        now = self._clock()
        record = outbox.write(key, {"at": now, "p": partition, "id": provider_id}, partition, report=False)
        index.append((now, key))
        await self.send_changes()
        written = record.sent  # send_changes returns only once every record written before it is handed over
        if written is None:  # pragma: no cover - a bug of send_changes
            raise RuntimeError("sent pair not handed to the producer")
        await written

    def expire(self, partition: int) -> int:
        """Delete up to ``EXPIRE_PER_EVENT`` pairs of ``partition`` older than ``ttl``; how many went.

        Call while handling an event of ``partition``: the tombstones go to its changelog
        partition, handed to the producer by the next ``send_changes`` (in the order written).
        """
        index = self._partition_index(partition)
        cutoff = self._clock() - self._ttl
        removed = 0
        table = self._table
        outbox = self._outbox
        while index and index[0][0] < cutoff and removed < EXPIRE_PER_EVENT:
            at, key = index.popleft()
            value = table.get(key)
            if value is None:
                continue
            if isinstance(value, dict) and isinstance(value.get("at"), int | float) and value["at"] > at:
                continue  # sent again since (after an expiry): its newer entry is indexed too
            if outbox is not None:
                outbox.write(key, None, partition)
            else:
                del table[key]
            removed += 1
        return removed

    async def send_changes(self) -> None:
        """Hand the changelog records written so far to the app's producer, in the order written.

        Tombstones' acknowledgements are not awaited (offset commits wait for them: Faust
        flushes this producer before every commit; a refused one is logged). Several actors
        of a sink's agent share the table: one of them at a time hands records over, so
        records keep the order they were written in, whichever actor wrote them, and a
        caller returns only once its own records are with the producer.
        """
        if self._outbox is not None:
            await self._outbox.send()

    def invalidate(self) -> None:
        """Forget the indexes (after a rebalance): rebuilt from the table on next use."""
        self._index.clear()

    def __len__(self) -> int:
        return sum(len(index) for index in self._index.values())

    def _partition_index(self, partition: int) -> deque[tuple[float, str]]:
        index = self._index.get(partition)
        if index is None:
            # One scan of the local store rebuilds every partition's index (after a start or a rebalance).
            found: dict[int, list[tuple[float, str]]] = {}
            for key, value in list(self._table.items()):
                if (
                    isinstance(value, dict)
                    and isinstance(value.get("p"), int)
                    and isinstance(value.get("at"), int | float)
                ):
                    found.setdefault(value["p"], []).append((float(value["at"]), key))
            for each, entries in found.items():
                self._index[each] = deque(sorted(entries))
            index = self._index.setdefault(partition, deque())
        return index


class InFlight:
    """The pairs this worker is sending right now, so two concurrent deliveries never send one pair twice.

    A sink's agent runs several deliveries at once (``Sink.max_in_flight``); a pair's work
    record seen twice close together (the router re-run after a crash, a redelivered batch)
    could otherwise pass the ``SentTargets.sent`` check in both before either has recorded
    its send. The second waits here for the first, then checks ``sent`` again. A partition
    is read by one worker at a time, so a process-local set covers every pair of it.
    """

    def __init__(self) -> None:
        self._busy: dict[str, list[asyncio.Future[None]]] = {}
        """Pairs held -> the deliveries waiting for each (a future each, made only for one that waits)."""

    def claim(self, key: str) -> _Claim:
        """Hold ``key`` for an ``async with`` block; wait first while another delivery holds it."""
        return _Claim(self._busy, key)

    def __len__(self) -> int:
        return len(self._busy)


class _Claim:
    """One delivery's hold on a pair (``InFlight.claim``): a plain context manager, no task or event per push."""

    __slots__ = ("_busy", "_key")

    def __init__(self, busy: dict[str, list[asyncio.Future[None]]], key: str) -> None:
        self._busy = busy
        self._key = key

    async def __aenter__(self) -> None:
        busy, key = self._busy, self._key
        while (waiting := busy.get(key)) is not None:
            released: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waiting.append(released)
            try:
                await released
            finally:
                if not released.done():  # cancelled while waiting: no longer among the waiters
                    released.cancel()
        busy[key] = []

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for released in self._busy.pop(self._key):
            if not released.done():
                released.set_result(None)
