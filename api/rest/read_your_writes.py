"""Read your writes: a write answers only once the projector has applied it (bounded wait).

The API and the projector may be different processes, so the wait polls the
projector's checkpoint in the database rather than an in-process signal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable

from api.publisher import Written
from projections.queries import NotificationQueries

RETRY_AFTER_SECONDS = 1
"""``Retry-After`` of a 202 answered because the projector had not caught up in time."""


class ReadYourWrites:
    """Waits until writes are visible in the read models, or the timeout passes."""

    def __init__(self, queries: NotificationQueries, timeout: float, *, interval: float = 0.01) -> None:
        self._queries = queries
        self._timeout = timeout
        self._interval = interval

    async def offsets(self, written: Iterable[Written]) -> bool:
        """True once the projector's next offset has passed every written record."""
        latest: dict[tuple[str, int], int] = {}
        for w in written:
            key = (w.topic, w.partition)
            latest[key] = max(latest.get(key, -1), w.offset)

        async def done() -> bool:
            for (topic, partition), offset in list(latest.items()):
                if await self._queries.projected_offset(topic, partition) <= offset:
                    return False
                del latest[(topic, partition)]
            return True

        return await self._until(done)

    async def notification(self, notification_id: str) -> bool:
        """True once the projector has a row for ``notification_id`` (whatever its outcome)."""
        return await self._until(lambda: self._queries.exists(notification_id))

    async def _until(self, probe: Callable[[], Awaitable[bool]]) -> bool:
        deadline = time.monotonic() + self._timeout
        interval = self._interval
        while True:
            if await probe():
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, 0.1)  # quick for the common case, gentle on the DB after
