"""``herald redeliver``: which deliveries to put back to work, from the log (pure).

Per notification and channel, each target's last recorded outcome decides: a target
that ever succeeded is never requeued; one whose last outcome is in the statuses asked
for (``failed``, ``abandoned``) is requeued on its own; a channel ``deferred`` with no
attempt on any target yet is requeued whole (the sink resolves the targets again).
Cancelled (read, deleted, no target), expired and in-progress (retry scheduled, already
requeued) deliveries are left alone. Only the generic retry path's channels qualify: a
WebSocket delivery is replayed by the gateway on reconnect, not redelivered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.channels import REGISTRY

CHANNELS = REGISTRY.handed_off
"""Channels ``herald redeliver`` can requeue."""
STATUSES = ("failed", "abandoned", "deferred")
"""Statuses ``--status`` accepts."""


@dataclass(frozen=True, slots=True)
class Requeue:
    """One delivery to put back to work."""

    notification_id: str
    user_id: str
    channel: str
    target: str | None
    """``None``: every target of the channel (none was attempted yet)."""
    previous_status: str


def plan(
    accepted: Mapping[str, Mapping[str, Any]],
    outcomes: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    channels: Iterable[str] = CHANNELS,
    statuses: Iterable[str] = ("failed", "abandoned"),
) -> list[Requeue]:
    """What to requeue.

    ``accepted``: the ``data`` of each ``notification.accepted`` in the range, by id.
    ``outcomes``: ``(type, data)`` of the later events about them, in log order.
    """
    wanted_channels, wanted = set(channels), set(statuses)
    targets: dict[tuple[str, str], dict[str, str]] = {}
    channel_state: dict[tuple[str, str], str] = {}
    for kind, data in outcomes:
        nid, channel = data.get("notification_id"), data.get("channel")
        if not isinstance(nid, str) or nid not in accepted:
            continue
        if kind == "notification.expired":
            for name in [channel] if isinstance(channel, str) else CHANNELS:
                channel_state[(nid, name)] = "expired"
            continue
        if not isinstance(channel, str):
            continue
        key = (nid, channel)
        target = data.get("target")
        if kind == "delivery.cancelled":
            channel_state[key] = "cancelled"
        elif kind == "delivery.deferred":
            channel_state.setdefault(key, "deferred")
        elif kind == "delivery.requeued":
            if isinstance(target, str):
                targets.setdefault(key, {})[target] = "requeued"
            else:
                channel_state[key] = "requeued"
        elif isinstance(target, str):
            known = targets.setdefault(key, {})
            if known.get(target) == "succeeded":
                continue  # a delivery once made is final
            known[target] = {
                "delivery.succeeded": "succeeded",
                "delivery.failed": "failed",
                "delivery.retry_scheduled": "retrying",
                "delivery.abandoned": "abandoned",
            }.get(kind, known.get(target, "pending"))
    out: list[Requeue] = []
    for nid, data in accepted.items():
        user = str(data.get("user_id", ""))
        for channel in data.get("channels") or ():
            if channel not in wanted_channels or channel not in CHANNELS:
                continue
            key = (nid, channel)
            state = channel_state.get(key)
            if state in ("cancelled", "expired"):
                continue
            per_target = targets.get(key, {})
            if per_target:
                for target, status in sorted(per_target.items()):
                    if status in wanted and status != "succeeded":
                        out.append(Requeue(nid, user, channel, target, status))
            elif state == "deferred" and "deferred" in wanted:
                out.append(Requeue(nid, user, channel, None, "deferred"))
    return out
