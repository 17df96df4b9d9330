"""Priorities and channels: the small closed vocabularies of the domain."""

from __future__ import annotations

from enum import StrEnum

from engine.channels import REGISTRY


class Priority(StrEnum):
    """How urgent a notification is; each has its own request topic and rate limit."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


ALL_CHANNELS: tuple[str, ...] = REGISTRY.names
"""Where a notification can be delivered, in canonical order (declared in ``engine.channels``)."""


def resolve_channels(requested: tuple[str, ...]) -> tuple[str, ...]:
    """Expand ``all`` and drop repeats, keeping the order of the canonical channel list.

    ``all`` is every channel declared ``in_all`` (not webhook: it is named to be used).
    """
    wanted = set(requested) - {"all"} | (set(REGISTRY.all) if "all" in requested else set())
    return tuple(c for c in ALL_CHANNELS if c in wanted)
