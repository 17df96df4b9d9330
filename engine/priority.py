"""Priorities and channels: the small closed vocabularies of the domain."""

from __future__ import annotations

from enum import StrEnum


class Priority(StrEnum):
    """How urgent a notification is; each has its own request topic and rate limit."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Channel(StrEnum):
    """Where a notification can be delivered."""

    WEBSOCKET = "websocket"
    EMAIL = "email"
    APNS = "apns"


ALL_CHANNELS: tuple[str, ...] = tuple(c.value for c in Channel)


def resolve_channels(requested: tuple[str, ...]) -> tuple[str, ...]:
    """Expand ``all`` and drop repeats, keeping the order of the canonical channel list."""
    wanted = set(ALL_CHANNELS) if "all" in requested else set(requested)
    return tuple(c for c in ALL_CHANNELS if c in wanted)
