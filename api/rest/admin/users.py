"""``GET /api/admin/users/{id}``: one user as support sees them, in one request.

The latest 50 notifications of the inbox with the unread and total counts, the APNs
devices (active, or invalid with the push service's reason), the contact details and
channel preferences, whether a gateway holds the user now (``api/ws/presence.py``), and how
much of each priority's rate-limit window is used: the notifications accepted in the
last ``HERALD_RATE_LIMIT_WINDOW_SECONDS`` (timed by their request), against the limit.
A user Herald has never seen is not an error: everything is empty.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from api.rest.admin import AdminContext, read_models, require_admin
from api.rest.params import path_id

INBOX_ITEMS = 50
"""Notifications of the inbox listed (the counts cover all of them)."""


class UserRoutes:
    """Handler of ``/api/admin/users/{id}``."""

    def __init__(self, ctx: AdminContext) -> None:
        self._ctx = ctx

    def register(self, app: web.Application) -> None:
        """Add the route."""
        app.router.add_get("/api/admin/users/{id}", self.user)

    async def user(self, request: web.Request) -> web.Response:
        """Inbox, devices, contact, presence and rate-limit use of ``id``."""
        require_admin(self._ctx, request)
        user_id = path_id(request)
        queries, admin = self._ctx.queries, read_models(self._ctx)
        settings = self._ctx.settings
        page = await queries.page(user_id, limit=INBOX_ITEMS)
        counts = await queries.stats(user_id)
        window = settings.rate_limit_window_seconds
        used = await admin.rate_window_use(user_id, datetime.now(UTC) - timedelta(seconds=window))
        limits = {
            "high": settings.rate_limit_high,
            "medium": settings.rate_limit_medium,
            "low": settings.rate_limit_low,
        }
        presence = None
        if self._ctx.presence is not None:
            nodes = await self._ctx.presence.nodes(user_id)
            presence = {"online": bool(nodes), "connections": sum(n.connections for n in nodes)}
        return web.json_response(
            {
                "user_id": user_id,
                "inbox": {"items": page.items, "unread": counts.unread, "total": counts.total},
                "devices": await queries.devices(user_id),
                "contact": await queries.contact(user_id),
                "presence": presence,
                "rate_limits": {
                    p: {"used": used.get(p, 0), "limit": limit, "window_seconds": window} for p, limit in limits.items()
                },
            }
        )


def register(app: web.Application, ctx: AdminContext) -> None:
    """Add the user route."""
    UserRoutes(ctx).register(app)
