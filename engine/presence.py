"""Names shared by the gateway (writes presence) and the WebSocket sink (reads it)."""

from __future__ import annotations

PRESENCE_PREFIX = "herald:presence:"
GATEWAY_CHANNEL_PREFIX = "herald:gateway:"


def presence_key(user_id: str) -> str:
    """Redis hash ``node id -> expiry (unix seconds)`` of the gateways holding ``user_id``."""
    return PRESENCE_PREFIX + user_id


def gateway_channel(node_id: str) -> str:
    """Redis pub/sub channel a gateway node listens on for frames to its users."""
    return GATEWAY_CHANNEL_PREFIX + node_id


def live_nodes(entries: dict[str, str], *, now: float) -> list[str]:
    """Nodes whose presence entry has not expired at ``now``."""
    out = []
    for node, expiry in entries.items():
        try:
            if float(expiry) > now:
                out.append(node)
        except ValueError:
            continue  # a corrupt entry is treated as absent; the gateway rewrites it
    return sorted(out)
