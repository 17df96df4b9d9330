"""What the emulator remembers: received requests, token states, injected faults."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

#: Default reasons for :meth:`EmulatorState.fail_next` when none is given.
DEFAULT_FAULT_REASONS = {
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


@dataclass(frozen=True)
class ReceivedNotification:
    """One request as the emulator saw it, and how it answered.

    ``headers`` holds the regular (non-pseudo) request headers; the
    ``authorization`` value is replaced by ``"<redacted>"`` because it is a
    credential.  ``payload`` is ``None`` when the body was not a JSON object.
    ``received_at`` is seconds since the epoch.
    """

    token: str
    headers: dict[str, str]
    payload: dict[str, Any] | None
    status: int
    reason: str | None
    apns_id: str
    received_at: float
    key_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (what the inspection API returns)."""
        return asdict(self)


@dataclass
class _Fault:
    status: int
    reason: str
    remaining: int
    token: str | None


class EmulatorState:
    """Mutable behaviour and history, shared by all connections."""

    def __init__(self, max_records: int) -> None:
        self._records: deque[ReceivedNotification] = deque(maxlen=max_records)
        self._unregistered: dict[str, int] = {}
        self._bad: set[str] = set()
        self._faults: list[_Fault] = []
        # Replaced on every record so waiters can block without a lock; sync
        # code (the h2 protocol callbacks) can set it, unlike a Condition.
        self._changed = asyncio.Event()

    @property
    def records(self) -> list[ReceivedNotification]:
        return list(self._records)

    def record(self, notification: ReceivedNotification) -> None:
        self._records.append(notification)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def clear_records(self) -> None:
        self._records.clear()

    def reset(self) -> None:
        self._records.clear()
        self._unregistered.clear()
        self._bad.clear()
        self._faults.clear()

    def unregister(self, token: str, timestamp_ms: int | None) -> None:
        self._unregistered[token.lower()] = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)

    def mark_bad(self, token: str) -> None:
        self._bad.add(token.lower())

    def unregistered_since(self, token: str) -> int | None:
        return self._unregistered.get(token.lower())

    def is_bad(self, token: str) -> bool:
        return token.lower() in self._bad

    def fail_next(self, status: int, reason: str | None, count: int, token: str | None) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"fault status must be 4xx or 5xx, got {status}")
        if count < 1:
            raise ValueError(f"fault count must be positive, got {count}")
        if reason is None:
            try:
                reason = DEFAULT_FAULT_REASONS[status]
            except KeyError:
                raise ValueError(f"give a reason for status {status}") from None
        self._faults.append(_Fault(status, reason, count, token.lower() if token else None))

    def take_fault(self, token: str) -> tuple[int, str] | None:
        """Consume one injected failure applying to ``token``, oldest first."""
        token = token.lower()
        for fault in self._faults:
            if fault.token is None or fault.token == token:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault.status, fault.reason
        return None

    async def wait_for(self, count: int, token: str | None) -> list[ReceivedNotification]:
        """Wait until at least ``count`` records (for ``token``) exist."""

        def matching() -> list[ReceivedNotification]:
            wanted = token.lower() if token else None
            return [r for r in self._records if wanted is None or r.token.lower() == wanted]

        while len(found := matching()) < count:
            await self._changed.wait()
        return found
