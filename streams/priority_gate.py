"""Priority isolation inside one worker: lower priorities wait while higher ones are queued.

Each ingest agent reports how many records it has buffered (its inbox, ``streams.request_inbox``),
whether it is processing one, and whether its partitions have lag in the Kafka client
(fetched or on the broker, not yet handed out). Before handling a record, the medium
agent waits until high has none of these; the low agent waits for high and medium. A
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

    def __init__(self, *, enabled: bool = True, max_lag_wait: float = 0.1) -> None:
        self.enabled = enabled
        self.max_lag_wait = max_lag_wait
        self._queued: dict[Priority, Callable[[], int]] = {}
        self._lagging: dict[Priority, Callable[[], bool]] = {}
        self._in_flight: dict[Priority, int] = dict.fromkeys(_ORDER, 0)
        self._changed = asyncio.Event()

    def track(self, priority: Priority, queued: Callable[[], int]) -> None:
        """Register how to read the number of records buffered for ``priority``."""
        self._queued[priority] = queued

    def track_lag(self, priority: Priority, lagging: Callable[[], bool]) -> None:
        """Register how to tell that ``priority`` has records not yet handed to its agent."""
        self._lagging[priority] = lagging

    def pending(self, priority: Priority) -> int:
        """Records of ``priority`` buffered in its agent's stream or being processed."""
        probe = self._queued.get(priority)
        return (probe() if probe else 0) + self._in_flight[priority]

    def lagging(self, priority: Priority) -> bool:
        """Whether ``priority`` has records in the Kafka client not handed to its agent yet."""
        probe = self._lagging.get(priority)
        return probe is not None and probe()

    def higher_pending(self, priority: Priority) -> bool:
        """Whether any priority above ``priority`` has records in its agent."""
        return any(self.pending(p) for p in _ORDER[: _ORDER.index(priority)])

    def higher_lagging(self, priority: Priority) -> bool:
        """Whether any priority above ``priority`` has records on their way to its agent."""
        return any(self.lagging(p) for p in _ORDER[: _ORDER.index(priority)])

    async def wait_turn(self, priority: Priority) -> bool:
        """Wait until no higher priority has work; ``True`` if it had to wait.

        Records a higher agent holds are always waited for (that agent makes progress on
        its own). Records still in the Kafka client are waited for at most ``max_lag_wait``
        per call: handing them over needs the consumer, which may itself be waiting for
        room in this agent's buffer.
        """
        waited = False
        lag_deadline = asyncio.get_running_loop().time() + self.max_lag_wait
        while self.enabled:
            if self.higher_pending(priority):
                timeout = 0.05
            elif self.higher_lagging(priority) and asyncio.get_running_loop().time() < lag_deadline:
                timeout = 0.005
            else:
                break
            waited = True
            self._changed.clear()
            # A record arriving for a higher priority does not notify; finishing one does.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=timeout)
        return waited

    def may_wait(self, priority: Priority) -> bool:
        """Whether ``wait_turn(priority)`` can wait at all (not for the highest priority, nor when disabled).

        The ingest agent asks before each record, so the highest priority's records go
        without a coroutine per record that could only return ``False``.
        """
        return self.enabled and priority is not _ORDER[0]

    @contextlib.contextmanager
    def busy(self, priority: Priority) -> Iterator[None]:
        """Mark one record of ``priority`` as being processed."""
        self.started(priority)
        try:
            yield
        finally:
            self.finished(priority)

    def started(self, priority: Priority) -> None:
        """``busy`` without the context manager: one record of ``priority`` is being processed ..."""
        self._in_flight[priority] += 1

    def finished(self, priority: Priority) -> None:
        """... until this call (once per ``started``, in a ``finally``)."""
        self._in_flight[priority] -= 1
        self._changed.set()
