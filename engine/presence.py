"""Names shared by the gateway (writes presence) and the WebSocket sink (reads it).

Every key carries the deployment's topic prefix, so two Herald deployments (or two
test runs) sharing one Redis never see each other's users.
"""

from __future__ import annotations


def presence_key(prefix: str, user_id: str) -> str:
    """Redis hash ``node id -> expiry (unix seconds)`` of the gateways holding ``user_id``."""
    return f"{prefix}presence:{user_id}"


def gateway_channel(prefix: str, node_id: str) -> str:
    """Redis pub/sub channel a gateway node listens on for frames to its users."""
    return f"{prefix}gateway:{node_id}"


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
