"""Per-user, per-priority rate limit: an exact sliding-window log.

A user may have at most ``limit`` notifications admitted in any interval of
``window_seconds``. The window keeps the admission times (and notification ids) of
the last ``limit`` admissions at most, so the check is exact, not an approximation
(unlike GCRA or fixed windows, which let up to ``limit + 1`` or ``2 * limit`` through
some window). Pure: time is passed in as Unix seconds.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from engine.priority import Priority


@dataclass(frozen=True, slots=True)
class RateLimit:
    """How many notifications one user may get per window at one priority."""

    limit: int
    """Admissions allowed per window."""
    window_seconds: int
    """Window length in seconds."""


@dataclass(frozen=True, slots=True)
class Window:
    """Admissions still inside the window, oldest first: ``(unix seconds, notification id)``.

    Ordered by time (``admit`` never records a time before the newest admission), so the
    admissions that left the window are a prefix, found by bisection.
    """

    admitted: tuple[tuple[float, str], ...] = ()

    def to_json(self) -> list[list[Any]]:
        """JSON-ready form, for a table's changelog."""
        return [[at, nid] for at, nid in self.admitted]

    @classmethod
    def from_json(cls, raw: list[list[Any]] | None) -> Window:
        """Inverse of ``to_json`` (``None`` is the empty window)."""
        return cls(tuple((float(at), str(nid)) for at, nid in raw or ()))


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether one more notification may go through now, and when it could if not."""

    allowed: bool
    retry_after_seconds: float


_AT = itemgetter(0)
_ID = itemgetter(1)


def _first_live(admitted: tuple[tuple[float, str], ...], horizon: float) -> int:
    """Index of the first admission after ``horizon`` (the log is ordered by time)."""
    if not admitted or admitted[0][0] > horizon:
        return 0
    return bisect_right(admitted, horizon, key=_AT)


def live(window: Window, policy: RateLimit, *, now: float) -> Window:
    """``window`` without the admissions that have left it at ``now``."""
    start = _first_live(window.admitted, now - policy.window_seconds)
    return window if start == 0 else Window(window.admitted[start:])


def check(window: Window, policy: RateLimit, *, now: float, notification_id: str) -> Verdict:
    """May ``notification_id`` be admitted at ``now``?

    A notification already in the window (the same request processed again after a
    crash) is allowed without counting twice.
    """
    admitted = window.admitted
    start = _first_live(admitted, now - policy.window_seconds)
    count = len(admitted) - start
    if count < policy.limit:
        return Verdict(True, 0.0)
    if notification_id in map(_ID, admitted[start:]):
        return Verdict(True, 0.0)
    # The oldest admission that must leave before a slot frees up.
    oldest = admitted[start + count - policy.limit][0]
    # Rounded up to the millisecond: retrying after that long always finds room.
    return Verdict(False, max(0.0, math.ceil(round((oldest + policy.window_seconds - now) * 1000, 6)) / 1000))


def admit(window: Window, policy: RateLimit, *, now: float, notification_id: str) -> Window:
    """``window`` after admitting ``notification_id`` at ``now`` (idempotent)."""
    current = live(window, policy, now=now)
    admitted = current.admitted
    if notification_id in map(_ID, admitted):
        return current
    # Clocks of two workers may disagree after a rebalance: never record a time before
    # the newest admission, so the log stays ordered and the check stays exact.
    at = max(now, admitted[-1][0]) if admitted else now
    kept = admitted[-(policy.limit - 1) :] if policy.limit > 1 else ()
    return Window((*kept, (at, notification_id)))


def default_limits(high: int, medium: int, low: int, window_seconds: int) -> dict[str, RateLimit]:
    """The policy per priority value."""
    return {
        Priority.HIGH.value: RateLimit(high, window_seconds),
        Priority.MEDIUM.value: RateLimit(medium, window_seconds),
        Priority.LOW.value: RateLimit(low, window_seconds),
    }
