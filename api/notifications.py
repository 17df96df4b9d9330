"""REST: a user's notifications."""

from __future__ import annotations

from aiohttp import web

from api.auth import TokenVerifier
from api.problems import Problem
from projections.queries import NotificationQueries

MAX_PAGE = 200


class NotificationRoutes:
    """Handlers of ``/api/notifications``; every query is scoped to the caller."""

    def __init__(self, verifier: TokenVerifier, queries: NotificationQueries) -> None:
        self._verifier = verifier
        self._queries = queries

    def register(self, app: web.Application) -> None:
        """Add the routes to ``app``."""
        app.router.add_get("/api/notifications", self.list)
        app.router.add_get("/api/notifications/{id}", self.detail)

    async def list(self, request: web.Request) -> web.Response:
        """``GET /api/notifications?limit=&cursor=``: newest first."""
        principal = self._verifier.from_request(request)
        limit = _int_param(request, "limit", 50, low=1, high=MAX_PAGE)
        cursor = _int_param(request, "cursor", None, low=1, high=2**62)
        page = await self._queries.list(principal.subject, limit=limit, before=cursor)
        next_url = None
        if page.next_cursor is not None:
            next_url = str(request.rel_url.update_query({"cursor": str(page.next_cursor), "limit": str(limit)}))
        return web.json_response({"results": page.items, "next": next_url})

    async def detail(self, request: web.Request) -> web.Response:
        """``GET /api/notifications/{id}``: 404 for unknown ids *and* other users' ids."""
        principal = self._verifier.from_request(request)
        item = await self._queries.get(principal.subject, request.match_info["id"])
        if item is None:
            raise Problem(404, "Not Found", "no such notification")
        return web.json_response(item)


def _int_param(request: web.Request, name: str, default: int | None, *, low: int, high: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Problem(400, "Bad Request", f"{name} must be an integer") from None
    if not low <= value <= high:
        raise Problem(400, "Bad Request", f"{name} must be between {low} and {high}")
    return value
