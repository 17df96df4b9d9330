"""``GET /api/presence/{user_id}``: which gateway nodes hold a user's connections right now."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from api.auth import TokenVerifier
from api.problems import Problem
from api.ws.presence import Presence

SCOPE_PRESENCE = "presence:read"
"""May read any user's presence (``admin`` implies it)."""


class PresenceRoutes:
    """Service tokens (``presence:read`` or ``admin``) read anyone; a user token reads only itself."""

    def __init__(self, verifier: TokenVerifier, presence: Presence) -> None:
        self._verifier = verifier
        self._presence = presence

    def register(self, app: web.Application) -> None:
        """Add the route to ``app``."""
        app.router.add_get("/api/presence/{user_id}", self.get)

    async def get(self, request: web.Request) -> web.Response:
        """Live nodes (expired entries of crashed gateways are not listed) and connection counts."""
        principal = self._verifier.from_request(request)
        user_id = request.match_info["user_id"]
        if not principal.has(SCOPE_PRESENCE) and principal.subject != user_id:
            if principal.scopes:
                raise Problem(403, "Forbidden", f"reading another user's presence needs scope {SCOPE_PRESENCE}")
            raise Problem(404, "Not Found", "no such user")
        nodes = await self._presence.nodes(user_id)
        return web.json_response(
            {
                "user_id": user_id,
                "online": bool(nodes),
                "connections": sum(n.connections for n in nodes),
                "nodes": [
                    {
                        "node_id": n.node_id,
                        "connections": n.connections,
                        "expires_at": datetime.fromtimestamp(n.expires_at, UTC).isoformat().replace("+00:00", "Z"),
                    }
                    for n in nodes
                ],
            }
        )
