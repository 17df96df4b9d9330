"""The operator console's REST API (``/api/admin/...``, issue 12): one place where every admin
module registers its routes, and the admin-scope check they share.

Every route here reads any user's data, so each handler starts with ``require_admin``: no
token is a 401, a token without the ``admin`` scope a 403 (both problem+json). Modules get
what they need from one ``AdminContext``, so adding a module never changes a signature.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from api.auth import SCOPE_ADMIN, Principal, TokenVerifier
from api.problems import Problem
from api.publisher import Publisher
from api.ws.presence import Presence
from engine.settings import Settings
from projections.admin_queries import AdminQueries, QueryTooSlow
from projections.queries import NotificationQueries


@dataclass(frozen=True, slots=True)
class AdminContext:
    """Everything an admin module may use (the caller owns the lifecycles)."""

    verifier: TokenVerifier
    queries: NotificationQueries
    settings: Settings
    engine: AsyncEngine | None = None
    """The read models' engine (``None``: routes that need it answer 503)."""
    publisher: Publisher | None = None
    presence: Presence | None = None


def require_admin(ctx: AdminContext, request: web.Request) -> Principal:
    """The caller, if its token has the ``admin`` scope; ``Problem`` 401 (no/bad token) or 403 otherwise."""
    principal = ctx.verifier.from_request(request)
    if not principal.has(SCOPE_ADMIN):
        raise Problem(403, "Forbidden", "the operator console's API needs a token with the admin scope")
    return principal


def read_models(ctx: AdminContext) -> AdminQueries:
    """The console's queries of the read models; 503 on an API instance without a database."""
    if ctx.engine is None:
        raise Problem(503, "Service Unavailable", "this API instance has no read models")
    return AdminQueries(ctx.engine)


@web.middleware
async def _too_slow(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A console query the database cancelled (``QueryTooSlow``) is a 503 that says how to narrow it."""
    try:
        return await handler(request)
    except QueryTooSlow as exc:
        raise Problem(503, "Service Unavailable", f"{exc}: narrow it (user, since, until, a shorter window)") from None


def _optional(name: str) -> object | None:
    """Module ``api.rest.admin.<name>`` if it exists (errors inside it are not hidden)."""
    try:
        return importlib.import_module(f"api.rest.admin.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"api.rest.admin.{name}":
            raise
        return None


def register_admin(app: web.Application, ctx: AdminContext) -> None:
    """Add every ``/api/admin/`` route to ``app``."""
    from api.rest.admin import bulks, channels, overview, search, users  # they import this module's context

    app.middlewares.append(_too_slow)
    for module in (overview, search, users, bulks, channels):
        module.register(app, ctx)
    deadletters = _optional("deadletters")
    if deadletters is not None:
        deadletters.register_deadletters(app, ctx)  # type: ignore[attr-defined]
