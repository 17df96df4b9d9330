"""Idempotency: which request keys a user has already used inside the dedupe window.

A request is known by its ``idempotency_key`` (if any) and by its CloudEvent id.
Each remembered key notes the notification it created and the Kafka record it came
from: the same record read again (a redelivery after a crash) is the same request and
replays its decision; any other record with the key is a duplicate. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Seen:
    """The first use of a key."""

    original_id: str
    """Notification created by the first request with the key."""
    at: float
    """When it was accepted (Unix seconds)."""
    source: str
    """``topic/partition/offset`` of the record that carried it."""


@dataclass(frozen=True, slots=True)
class SeenKeys:
    """A user's keys still inside the window, by key."""

    keys: tuple[tuple[str, Seen], ...] = ()

    def get(self, key: str) -> Seen | None:
        """The first use of ``key``, if remembered."""
        for k, seen in self.keys:
            if k == key:
                return seen
        return None

    def to_json(self) -> dict[str, list[Any]]:
        """JSON-ready form, for a table's changelog."""
        return {k: [s.original_id, s.at, s.source] for k, s in self.keys}

    @classmethod
    def from_json(cls, raw: dict[str, list[Any]] | None) -> SeenKeys:
        """Inverse of ``to_json``."""
        return cls(tuple((k, Seen(str(v[0]), float(v[1]), str(v[2]))) for k, v in (raw or {}).items()))


def lookup(seen: SeenKeys, key: str, *, now: float, window_seconds: int) -> Seen | None:
    """The first use of ``key`` if it is still inside the window at ``now``."""
    first = seen.get(key)
    if first is None or first.at <= now - window_seconds:
        return None
    return first


def remember(seen: SeenKeys, key: str, first: Seen, *, now: float, window_seconds: int) -> SeenKeys:
    """``seen`` with ``key`` recorded (a live earlier use wins) and expired keys dropped."""
    horizon = now - window_seconds
    kept = tuple((k, s) for k, s in seen.keys if s.at > horizon)
    if any(k == key for k, _ in kept):
        return SeenKeys(kept)
    return SeenKeys((*kept, (key, first)))
