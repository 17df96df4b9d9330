"""``GET /api/admin/notifications`` and ``/api/admin/notifications/{id}``: find any user's
notification, then see where it stands and why.

The search takes the user API's filters (``projections.queries.ListFilter``) plus the
user and a text (``q``, a case-insensitive substring of title or body), newest first
with the same keyset cursor. The detail puts together what an operator needs to answer
"did it arrive": the notification, its channels' states (``notification_channels``),
its trail in the log with partition and offset (``projected_events``) and the existing
explanation read from Kafka (``api/rest/explain.py``, the same as ``herald why``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from api.problems import Problem
from api.rest.admin import AdminContext, read_models, require_admin
from api.rest.admin.params import enum_param, enum_params, int_param, invalid, str_param, time_param
from api.rest.explain import LogUnreachable, explain_notification
from api.rest.notifications import STATUS_ALIASES
from api.rest.params import path_id
from engine.priority import ALL_CHANNELS
from projections.admin_queries import PRIORITIES
from projections.notifications import STATUSES
from projections.queries import BadCursor, ListFilter

MAX_PAGE = 200
MAX_TEXT = 200
"""Longest ``q``."""
EXPLAIN_TIMEOUT_SECONDS = 20.0
"""How long the detail waits for the explanation before answering without it."""
SUMMARY_CHARS = 300
"""Longest summary of one trail event."""


def summary(kind: str, data: dict[str, Any]) -> str:
    """One line about an event of the trail, from the fields an operator looks for."""
    parts: list[str] = []
    if kind == "notification.accepted":
        parts.append(f"{data.get('priority', '?')} priority to {', '.join(map(str, data.get('channels', [])))}")
    for name in ("channel", "target"):
        if data.get(name):
            parts.append(f"{name} {data[name]}")
    if data.get("attempt") is not None:
        parts.append(f"attempt {data['attempt']}")
    if kind == "notification.rate_limited":
        parts.append(f"limit {data.get('limit')} per {data.get('window_seconds')} s")
    if data.get("original_id"):
        parts.append(f"duplicate of {data['original_id']}")
    reasons = data.get("reasons")
    for name in ("reason", "error"):
        if data.get(name):
            parts.append(str(data[name]))
    if isinstance(reasons, list) and reasons:
        parts.append("; ".join(map(str, reasons)))
    text = ", ".join(parts) if parts else kind
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


class SearchRoutes:
    """Handlers of ``/api/admin/notifications``."""

    def __init__(self, ctx: AdminContext) -> None:
        self._ctx = ctx

    def register(self, app: web.Application) -> None:
        """Add the routes."""
        app.router.add_get("/api/admin/notifications", self.search)
        app.router.add_get("/api/admin/notifications/{id}", self.detail)

    async def search(self, request: web.Request) -> web.Response:
        """Any user's notifications matching every given filter, newest first, paginated."""
        require_admin(self._ctx, request)
        statuses = enum_params(request, "status", (*STATUSES, *STATUS_ALIASES))
        filters = ListFilter(
            statuses=tuple(dict.fromkeys(STATUS_ALIASES.get(s, s) for s in statuses)),
            priorities=enum_params(request, "priority", PRIORITIES),
            channel=enum_param(request, "channel", ALL_CHANNELS),
            since=time_param(request, "since"),
            until=time_param(request, "until"),
            category=str_param(request, "category", max_length=100),
            bulk_id=str_param(request, "bulk_id"),
        )
        user = str_param(request, "user")
        text = str_param(request, "q", max_length=MAX_TEXT)
        limit = int_param(request, "limit", 50, low=1, high=MAX_PAGE)
        cursor = str_param(request, "cursor", max_length=600)
        try:
            page = await read_models(self._ctx).search(user, text, filters, limit=limit, cursor=cursor)
        except BadCursor:
            raise invalid("cursor", "cursor is not one this API issued") from None
        return web.json_response({"items": page.items, "next_cursor": page.next_cursor})

    async def detail(self, request: web.Request) -> web.Response:
        """The notification, its targets, its trail and its explanation; 404 for an unknown id."""
        require_admin(self._ctx, request)
        nid = path_id(request)
        item = await self._ctx.queries.get(None, nid)
        if item is None:
            raise Problem(404, "Not Found", "no such notification")
        targets = await read_models(self._ctx).targets(nid)
        trail = [
            {
                "id": e["id"],
                "type": e["type"],
                "time": e["time"],
                "partition": e["partition"],
                "offset": e["offset"],
                "summary": summary(e["type"], e["data"] if isinstance(e["data"], dict) else {}),
            }
            for e in await self._ctx.queries.events(nid)
        ]
        explanation: list[str] = []
        error = None
        try:
            found = await asyncio.wait_for(
                explain_notification(self._ctx.settings, nid, self._ctx.queries), EXPLAIN_TIMEOUT_SECONDS
            )
        except LogUnreachable as exc:
            error = str(exc)
        except TimeoutError:
            error = f"reading the log took over {EXPLAIN_TIMEOUT_SECONDS:.0f} s"
        else:
            explanation = found.lines() if found is not None else []
        return web.json_response(
            {
                "notification": item,
                "targets": targets,
                "trail": trail,
                "explanation": explanation,
                "explanation_error": error,
            }
        )


def register(app: web.Application, ctx: AdminContext) -> None:
    """Add the search and detail routes."""
    SearchRoutes(ctx).register(app)
