"""``GET /api/admin/channels``: the channel registry as the console draws it.

The console's charts (delivered and failed per channel) and its search form's channel
choice used to list the channels by hand, so a new channel was missing from them until
someone edited the page. They now read this list once, when the console opens: every
channel of the registry (``schemas.channels``) in canonical (storage-bit) order, with
what it sends to, whether ``all`` includes it, the channel it waits on and, for a device
channel, its device platform.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.rest.admin import AdminContext, require_admin
from schemas import channels


def channel_list() -> list[dict[str, Any]]:
    """Every channel of the registry, in canonical order."""
    return [
        {
            "name": spec.name,
            "target": spec.target,
            "in_all": spec.in_all,
            "fallback_after": spec.fallback_after,
            "platform": None if spec.platform is None else spec.platform.name,
        }
        for spec in channels.REGISTRY.specs
    ]


class ChannelRoutes:
    """Handler of ``/api/admin/channels``."""

    def __init__(self, ctx: AdminContext) -> None:
        self._ctx = ctx

    def register(self, app: web.Application) -> None:
        """Add the route."""
        app.router.add_get("/api/admin/channels", self.channels)

    async def channels(self, request: web.Request) -> web.Response:
        """The registry's channels and device platforms (admin scope)."""
        require_admin(self._ctx, request)
        return web.json_response({"results": channel_list(), "platforms": list(channels.platforms())})


def register(app: web.Application, ctx: AdminContext) -> None:
    """Add the channel list route."""
    ChannelRoutes(ctx).register(app)
