"""The ``notifications`` read model's storage side of the notification fold.

The rules (statuses, channel states, which event wins) live in ``engine.notification_status``
and are re-exported here for the projector, the API and the audit tools; this module adds
what only storage needs: the channel bits of ``notifications.channel_mask``, which columns
a fold may change, and the stat counters a notification adds to.
"""

from __future__ import annotations

from typing import Any

from engine.channels import REGISTRY
from engine.notification_status import CHANNEL_STATES as CHANNEL_STATES
from engine.notification_status import OPEN_CHANNEL_STATES as OPEN_CHANNEL_STATES
from engine.notification_status import REFUSED as REFUSED
from engine.notification_status import STATUSES as STATUSES
from engine.notification_status import ChannelState as ChannelState
from engine.notification_status import NotificationState as NotificationState
from engine.notification_status import States as States
from engine.notification_status import derive_status as derive_status
from engine.notification_status import fold as fold
from engine.notification_status import notification_id_of as notification_id_of

CHANNEL_BITS = dict(REGISTRY.bits)
"""Bit of each channel in ``notifications.channel_mask``: the explicit storage ids of ``engine.channels``."""


MUTABLE_FIELDS = ("status", "attempts", "error", "delivered_at", "read_at", "deleted_at")
"""Notification columns that change after acceptance (content never does)."""


def mutable_values(state: NotificationState) -> tuple[Any, ...]:
    """The values of ``MUTABLE_FIELDS`` (to tell whether a fold changed the row)."""
    return (state.status, state.attempts, state.error, state.delivered_at, state.read_at, state.deleted_at)


def channel_values(ch: ChannelState) -> tuple[Any, ...]:
    """Every column of a channel row (to tell whether a fold changed it)."""
    return (
        ch.state,
        ch.attempts,
        ch.target,
        ch.provider_id,
        ch.error,
        ch.delivered_at,
        ch.next_attempt_at,
        ch.updated_at,
    )


def channel_mask(channels: list[str]) -> int:
    """Bit mask of ``channels`` (see ``CHANNEL_BITS``)."""
    mask = 0
    for name in channels:
        mask |= CHANNEL_BITS.get(name, 0)
    return mask


def contributions(state: NotificationState | None) -> list[tuple[str, str]]:
    """The stat counters one notification adds to (nothing once deleted)."""
    if state is None or state.deleted_at is not None:
        return []
    out = [("total", ""), ("status", state.status), ("priority", state.priority)]
    out.extend(("channel", f"{name}.{ch.state}") for name, ch in sorted(state.channel_states.items()))
    if state.read_at is None:
        out.append(("unread", ""))
    return out
