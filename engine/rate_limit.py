"""Per-user, per-priority rate limit: an exact sliding-window log.

A user may have at most ``limit`` notifications admitted in any interval of
``window_seconds``. The window keeps the admission times (and notification ids) of
the last ``limit`` admissions at most, so the check is exact, not an approximation
(unlike GCRA or fixed windows, which let up to ``limit + 1`` or ``2 * limit`` through
some window). Pure: time is passed in as Unix seconds.

``Slots`` is the same window changed in place, for the worker's admission store: the same
decisions as ``check`` and ``admit`` on the same admissions (a property test runs both on
random sequences), without copying the log on every admission or scanning it for an id.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
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
_ALLOWED = Verdict(True, 0.0)
"""The verdict of every allowed request (immutable: one object serves them all)."""


def _first_live(admitted: Sequence[tuple[float, str]], horizon: float) -> int:
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
        return _ALLOWED
    if notification_id in map(_ID, admitted[start:]):
        return _ALLOWED
    # The oldest admission that must leave before a slot frees up.
    return _refused(admitted[start + count - policy.limit][0], policy, now)


def _refused(oldest: float, policy: RateLimit, now: float) -> Verdict:
    """Refused until the admission at ``oldest`` leaves the window."""
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


class Slots:
    """A ``Window`` changed in place: ``check`` and ``admit`` decide as the functions of the same
    names on ``window()``, at O(1) amortised per admission (the functions copy the log on each
    admission and scan it for the id). Its log is ordered by time, as a ``Window``'s.

    The ids of a log of ``INDEXED_FROM`` admissions or more are counted in a dict (a shorter
    log is scanned, as cheap as the lookup), so the many users with few admissions cost no
    more memory than their ``Window`` did.
    """

    __slots__ = ("_admitted", "_ids")

    INDEXED_FROM = 16
    """Logs at least this long keep their ids in a dict."""

    def __init__(self, admitted: Iterable[tuple[float, str]] = ()) -> None:
        self._admitted: list[tuple[float, str]] = list(admitted)
        self._ids: dict[str, int] | None = None
        """How many times each id is in the log (once, as ``admit`` never adds an id it holds);
        ``None`` while the log is shorter than ``INDEXED_FROM``."""
        self._index()

    def window(self) -> Window:
        """The immutable window of the same admissions."""
        return Window(tuple(self._admitted))

    def holds(self, notification_id: str) -> bool:
        """Whether ``notification_id`` is in the log (inside the window or not)."""
        ids = self._ids
        if ids is None:
            return notification_id in map(_ID, self._admitted)
        return notification_id in ids

    def __len__(self) -> int:
        return len(self._admitted)

    def check(self, policy: RateLimit, *, now: float, notification_id: str) -> Verdict:
        """``check(self.window(), policy, ...)``."""
        admitted = self._admitted
        start = _first_live(admitted, now - policy.window_seconds)
        count = len(admitted) - start
        if count < policy.limit:
            return _ALLOWED
        if self.holds(notification_id) and notification_id in map(_ID, admitted[start:]):
            return _ALLOWED
        return _refused(admitted[start + count - policy.limit][0], policy, now)

    def admit(self, policy: RateLimit, *, now: float, notification_id: str) -> None:
        """Become ``admit(self.window(), policy, ...)``."""
        admitted = self._admitted
        start = _first_live(admitted, now - policy.window_seconds)
        if start:
            self._drop(start)
        if self.holds(notification_id):
            return
        at = max(now, admitted[-1][0]) if admitted else now
        excess = len(admitted) - (policy.limit - 1) if policy.limit > 1 else len(admitted)
        if excess > 0:
            self._drop(excess)
        admitted.append((at, notification_id))
        ids = self._ids
        if ids is not None:
            ids[notification_id] = ids.get(notification_id, 0) + 1
        elif len(admitted) >= self.INDEXED_FROM:
            self._index()

    def forget_until(self, horizon: float) -> None:
        """Drop the admissions at or before ``horizon`` (a prefix: the log is ordered by time)."""
        start = _first_live(self._admitted, horizon)
        if start:
            self._drop(start)

    def _index(self) -> None:
        """Count the ids in a dict if the log is long enough (else none)."""
        if len(self._admitted) < self.INDEXED_FROM:
            self._ids = None
            return
        ids: dict[str, int] = {}
        for _, nid in self._admitted:
            ids[nid] = ids.get(nid, 0) + 1
        self._ids = ids

    def _drop(self, count: int) -> None:
        """Drop the ``count`` oldest admissions."""
        ids = self._ids
        if ids is not None:
            for _, nid in self._admitted[:count]:
                left = ids[nid] - 1
                if left:
                    ids[nid] = left
                else:
                    del ids[nid]
        del self._admitted[:count]


def default_limits(high: int, medium: int, low: int, window_seconds: int) -> dict[str, RateLimit]:
    """The policy per priority value."""
    return {
        Priority.HIGH.value: RateLimit(high, window_seconds),
        Priority.MEDIUM.value: RateLimit(medium, window_seconds),
        Priority.LOW.value: RateLimit(low, window_seconds),
    }
