"""Dev-only conveniences, registered only when ``settings.dev_mode`` (``herald dev``).

``POST /api/dev/token`` mints a token for any user so the demo page can log in without
a separate identity provider (``"scope": "admin"`` mints an operator's token for the
console at ``/console``). Never enabled in production roles (they refuse
``HERALD_DEV_MODE``), and it answers loopback clients only: a dev stack bound to
``0.0.0.0`` does not hand out tokens to the network.
"""

from __future__ import annotations

import ipaddress
import re

from aiohttp import web

from api.auth import SCOPE_ADMIN, SCOPE_WRITE, mint_token
from api.problems import Problem
from engine.settings import Settings

USER_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,100}$")


class DevRoutes:
    """Token minting for the demo page."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def register(self, app: web.Application) -> None:
        """Add the routes to ``app`` (the caller checks ``dev_mode``)."""
        app.router.add_post("/api/dev/token", self.token)

    async def token(self, request: web.Request) -> web.Response:
        """``{"user_id": "alice"}`` -> ``{"user_id", "token", "expires_in"}`` (may also send notifications);
        with ``"scope": "admin"`` the token has the admin scope (the console's dev login)."""
        if not _loopback(request.remote):
            raise Problem(403, "Forbidden", "the dev token endpoint answers loopback clients only")
        try:
            body = await request.json()
        except ValueError:
            raise Problem(400, "Bad Request", "body must be JSON") from None
        user_id = body.get("user_id") if isinstance(body, dict) else None
        if not isinstance(user_id, str) or not USER_ID.match(user_id):
            raise Problem(400, "Bad Request", "user_id: 1-100 characters of letters, digits, '_', '.', '@', '-'")
        scope = body.get("scope", SCOPE_WRITE)
        if scope not in (SCOPE_WRITE, SCOPE_ADMIN):
            raise Problem(400, "Bad Request", f"scope: {SCOPE_WRITE!r} (default) or {SCOPE_ADMIN!r}")
        ttl = self._settings.token_ttl_seconds
        token = mint_token(self._settings, user_id, scopes=(scope,), ttl=ttl)
        return web.json_response({"user_id": user_id, "token": token, "expires_in": ttl})


def _loopback(remote: str | None) -> bool:
    """Whether the peer address is a loopback one (``None``: unknown, so no)."""
    if remote is None:
        return False
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback  # a dual-stack socket reports 127.0.0.1 as ::ffff:127.0.0.1
    return address.is_loopback
