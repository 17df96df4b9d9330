"""``GET /api/admin/bulks`` and ``/api/admin/bulks/{bulk_id}``: how each bulk send is progressing.

A bulk's id is the correlation id of its notifications (``api/rest/bulk.py``). The list shows
the latest bulks with their notifications by status; the detail adds the refused
targets, each with the reason recorded in the log and its notification id (for
``herald why``): the requests ingest refused (rejected, rate limited, duplicate) and the
targets the API refused before publishing (unknown or inactive device tokens, recorded
as ``bulk.target_refused`` and projected as rejected), at most 200
(``projections.admin_queries.REFUSED_LISTED``).
"""

from __future__ import annotations

from aiohttp import web

from api.problems import Problem
from api.rest.admin import AdminContext, read_models, require_admin
from api.rest.admin.params import int_param
from api.rest.params import path_id

MAX_PAGE = 200


class BulkRoutes:
    """Handlers of ``/api/admin/bulks``."""

    def __init__(self, ctx: AdminContext) -> None:
        self._ctx = ctx

    def register(self, app: web.Application) -> None:
        """Add the routes."""
        app.router.add_get("/api/admin/bulks", self.bulks)
        app.router.add_get("/api/admin/bulks/{bulk_id}", self.bulk)

    async def bulks(self, request: web.Request) -> web.Response:
        """The latest ``limit`` bulks, newest first."""
        require_admin(self._ctx, request)
        limit = int_param(request, "limit", 50, low=1, high=MAX_PAGE)
        return web.json_response({"items": await read_models(self._ctx).bulks(limit)})

    async def bulk(self, request: web.Request) -> web.Response:
        """One bulk by status with its refused targets; 404 until one of its notifications is projected."""
        require_admin(self._ctx, request)
        found = await read_models(self._ctx).bulk(path_id(request, "bulk_id"))
        if found is None:
            raise Problem(404, "Not Found", "no notification of this bulk has been projected (yet)")
        return web.json_response(found)


def register(app: web.Application, ctx: AdminContext) -> None:
    """Add the bulk routes."""
    BulkRoutes(ctx).register(app)
