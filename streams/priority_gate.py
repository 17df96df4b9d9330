"""Priority isolation inside one worker: lower priorities wait while higher ones are queued.

Each ingest agent reports how many records it has buffered (its stream's queue) and
whether it is processing one. Before handling a record, the medium agent waits until
no high record is queued or in flight; the low agent waits for high and medium. A
backlog of low requests therefore costs a high request at most the one low record
already in flight, instead of a place at the back of the queue. Starvation of low
priority under sustained high load is intended: high is always consumed first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

from engine.priority import Priority

_ORDER = (Priority.HIGH, Priority.MEDIUM, Priority.LOW)


class PriorityGate:
    """Shared by the ingest agents of one worker process."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._queued: dict[Priority, Callable[[], int]] = {}
        self._in_flight: dict[Priority, int] = dict.fromkeys(_ORDER, 0)
        self._changed = asyncio.Event()

    def track(self, priority: Priority, queued: Callable[[], int]) -> None:
        """Register how to read the number of records buffered for ``priority``."""
        self._queued[priority] = queued

    def pending(self, priority: Priority) -> int:
        """Records of ``priority`` buffered or being processed."""
        probe = self._queued.get(priority)
        return (probe() if probe else 0) + self._in_flight[priority]

    def higher_pending(self, priority: Priority) -> bool:
        """Whether any priority above ``priority`` has work."""
        return any(self.pending(p) for p in _ORDER[: _ORDER.index(priority)])

    async def wait_turn(self, priority: Priority) -> bool:
        """Wait until no higher priority has work; ``True`` if it had to wait."""
        waited = False
        while self.enabled and self.higher_pending(priority):
            waited = True
            self._changed.clear()
            # A record arriving for a higher priority does not notify; finishing one does.
            # The timeout bounds the wait if a higher agent is stopped while holding work.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=0.05)
        return waited

    @contextlib.contextmanager
    def busy(self, priority: Priority) -> Iterator[None]:
        """Mark one record of ``priority`` as being processed."""
        self._in_flight[priority] += 1
        try:
            yield
        finally:
            self._in_flight[priority] -= 1
            self._changed.set()
