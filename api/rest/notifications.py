"""REST: notifications — send, list with filters, read, mark read, delete, trail, stats.

Reads are scoped to the caller (``?user_id=`` for admins); another user's notification
is a 404, exactly like one that does not exist. Writes publish to Kafka and answer once
the projector has applied them (read your writes), or 202 with ``Retry-After``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.auth import SCOPE_ADMIN, SCOPE_WRITE, Principal, TokenVerifier
from api.problems import Problem
from api.publisher import Publisher
from api.rest.envelopes import (
    DEVICE_TOKEN_CHANNEL,
    REQUEST_FIELDS,
    build_request,
    check_address,
    fact,
    request_id,
)
from api.rest.params import bool_param, enum_params, int_param, json_body, path_id, str_param, time_param, whose
from api.rest.read_your_writes import RETRY_AFTER_SECONDS, ReadYourWrites
from engine.priority import ALL_CHANNELS
from engine.settings import Settings
from projections.notifications import STATUSES
from projections.queries import BadCursor, ListFilter, NotificationQueries
from schemas.events import NotificationDeleted, NotificationRead
from schemas.ids import uuid7

MAX_PAGE = 200
READ_ALL_LIMIT = 10_000
"""Notifications ``read-all`` marks per call (the answer says if more remain)."""
STATUS_ALIASES = {"sent": "delivered"}
"""Status filter names of the push service Herald replaces: ``sent`` is a notification delivered."""


def retry_later(body: dict[str, Any], location: str | None = None) -> web.Response:
    """202: written, but not yet visible in the read models."""
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if location:
        headers["Location"] = location
    return web.json_response({**body, "projected": False}, status=202, headers=headers)


class NotificationRoutes:
    """Handlers of ``/api/notifications``."""

    def __init__(
        self,
        verifier: TokenVerifier,
        queries: NotificationQueries,
        publisher: Publisher | None = None,
        settings: Settings | None = None,
    ) -> None:
        self._verifier = verifier
        self._queries = queries
        self._publisher = publisher
        self._settings = settings or Settings()
        self._ryw = ReadYourWrites(queries, self._settings.read_your_writes_timeout)

    def register(self, app: web.Application) -> None:
        """Add the routes to ``app`` (fixed paths before ``{id}``)."""
        r = app.router
        r.add_get("/api/notifications", self.list_notifications)
        r.add_post("/api/notifications", self.create)
        r.add_get("/api/notifications/stats", self.stats)
        r.add_post("/api/notifications/read-all", self.read_all)
        r.add_get("/api/notifications/{id}", self.detail)
        r.add_delete("/api/notifications/{id}", self.delete)
        r.add_get("/api/notifications/{id}/events", self.events)
        r.add_patch("/api/notifications/{id}/read", self.mark_read)

    def _writer(self) -> Publisher:
        if self._publisher is None:
            raise Problem(503, "Service Unavailable", "this API instance has no broker connection")
        return self._publisher

    async def list_notifications(self, request: web.Request) -> web.Response:
        """``GET /api/notifications``: newest first, filtered, keyset-paginated."""
        principal = self._verifier.from_request(request)
        user_id = whose(request, principal)
        limit = int_param(request, "limit", 50, low=1, high=MAX_PAGE)
        channel = enum_params(request, "channel", ALL_CHANNELS)
        if len(channel) > 1:
            raise Problem(400, "Bad Request", "channel takes one value")
        statuses = enum_params(request, "status", (*STATUSES, *STATUS_ALIASES))
        filters = ListFilter(
            statuses=tuple(dict.fromkeys(STATUS_ALIASES.get(s, s) for s in statuses)),
            priorities=enum_params(request, "priority", ("high", "medium", "low")),
            channel=channel[0] if channel else None,
            unread=bool_param(request, "unread"),
            since=time_param(request, "since"),
            until=time_param(request, "until"),
            device_token=str_param(request, "device_token"),
            category=str_param(request, "category", max_length=100),
            bulk_id=str_param(request, "bulk_id"),
        )
        cursor = str_param(request, "cursor", max_length=600)
        try:
            page = await self._queries.page(user_id, limit=limit, cursor=cursor, filters=filters)
        except BadCursor:
            raise Problem(400, "Bad Request", "cursor is not one this API issued") from None
        next_url = None
        if page.next_cursor is not None:
            # Never a credential in a link (from_request refuses ?token= anyway): links get logged and shared.
            query = request.rel_url.without_query_params("token")
            next_url = str(query.update_query({"cursor": page.next_cursor, "limit": str(limit)}))
        return web.json_response({"results": page.items, "next": next_url})

    async def _own(self, request: web.Request, principal: Principal, *, deliveries: bool = False) -> dict[str, Any]:
        owner = None if principal.has(SCOPE_ADMIN) else principal.subject
        item = await self._queries.get(owner, path_id(request), deliveries=deliveries)
        if item is None:
            raise Problem(404, "Not Found", "no such notification")
        return item

    async def detail(self, request: web.Request) -> web.Response:
        """``GET /api/notifications/{id}`` with its deliveries; 404 for unknown *and* other users' ids."""
        principal = self._verifier.from_request(request)
        return web.json_response(await self._own(request, principal, deliveries=True))

    async def events(self, request: web.Request) -> web.Response:
        """``GET /api/notifications/{id}/events``: the notification's event trail, in log order."""
        principal = self._verifier.from_request(request)
        item = await self._own(request, principal)
        return web.json_response({"notification_id": item["id"], "events": await self._queries.events(item["id"])})

    async def create(self, request: web.Request) -> web.Response:
        """``POST /api/notifications``: publish a request; 202 with id and ``Location``."""
        principal = self._verifier.from_request(request)
        publisher = self._writer()
        body = await json_body(request, max_bytes=self._settings.max_request_bytes)
        unknown = sorted(set(body) - REQUEST_FIELDS)
        if unknown:
            raise Problem(422, "Unprocessable Content", f"unknown field(s): {', '.join(unknown)}")
        token = body.get("device_token")
        if isinstance(token, str):
            token = body["device_token"] = token.lower()
            # A push to one device: without ``channels`` the request goes on that device's channel
            # (the schema's default, websocket alone, would never reach the phone).
            body.setdefault("channels", [DEVICE_TOKEN_CHANNEL])
        token_owner: tuple[str, bool] | None = None  # looked up once, for a token named alone
        if "user_id" not in body and isinstance(token, str) and principal.has(SCOPE_WRITE):
            # A service sending to a device token alone: the recipient is the device's owner
            # (the schema is checked before the query, with a stand-in recipient).
            build_request({**body, "user_id": principal.subject}, notification_id=uuid7())
            owner = (await self._queries.device_owners([token])).get(token)
            if owner is None or not owner[1]:
                raise Problem(422, "Unprocessable Content", "device_token is not an active device")
            body["user_id"], token_owner = owner[0], owner
        body.setdefault("user_id", principal.subject)
        if not isinstance(body["user_id"], str):
            raise Problem(422, "Unprocessable Content", "user_id must be a string")
        if body["user_id"] != principal.subject and not principal.has(SCOPE_WRITE):
            raise Problem(403, "Forbidden", "sending to another user needs the notifications:write scope")
        check_address(body, may_write=principal.has(SCOPE_WRITE))
        key = request.headers.get("Idempotency-Key")
        if key is not None and not 1 <= len(key) <= 200:
            raise Problem(400, "Bad Request", "Idempotency-Key must be 1 to 200 characters")
        if key is not None:
            body["idempotency_key"] = key
        nid = request_id(principal.subject, body["user_id"], key)
        # Validates (schema, encoded size) before any query.
        env, priority = build_request(body, notification_id=nid, max_bytes=self._settings.max_request_bytes)
        if token is not None:
            owner = token_owner or (await self._queries.device_owners([token])).get(token)
            if owner != (body["user_id"], True):
                raise Problem(422, "Unprocessable Content", "device_token is not an active device of the recipient")
        location = f"/api/notifications/{nid}"
        if key is None or not await self._queries.exists(nid):
            await publisher.request(env, priority)
        if not await self._ryw.notification(nid):
            return retry_later({"id": nid, "status": "queued"}, location)
        item = await self._queries.get(None, nid)
        return web.json_response(
            {**(item or {"id": nid, "status": "deleted"}), "projected": True},
            status=202,
            headers={"Location": location},
        )

    async def mark_read(self, request: web.Request) -> web.Response:
        """``PATCH /api/notifications/{id}/read``: emits ``notification.read`` (once)."""
        principal = self._verifier.from_request(request)
        item = await self._own(request, principal)
        if item["read_at"] is not None:
            return web.json_response(item)
        event = NotificationRead(notification_id=item["id"], user_id=item["user_id"], via="api")
        written = await self._writer().append(
            [fact(event, user_id=item["user_id"], subject=item["id"], unique=item["id"])]
        )
        if not await self._ryw.offsets(written):
            return retry_later({"id": item["id"]})
        return web.json_response(await self._own(request, principal))

    async def read_all(self, request: web.Request) -> web.Response:
        """``POST /api/notifications/read-all``: mark every unread notification of the caller read."""
        principal = self._verifier.from_request(request)
        user_id = whose(request, principal)
        ids = await self._queries.unread_ids(user_id, limit=READ_ALL_LIMIT + 1)
        more, ids = len(ids) > READ_ALL_LIMIT, ids[:READ_ALL_LIMIT]
        facts = [
            fact(
                NotificationRead(notification_id=nid, user_id=user_id, via="api"),
                user_id=user_id,
                subject=nid,
                unique=nid,
            )
            for nid in ids
        ]
        written = await self._writer().append_many(facts) if facts else []
        body = {"marked": len(ids), "more": more}
        if not await self._ryw.offsets(written):
            return retry_later(body)
        return web.json_response({**body, "projected": True})

    async def delete(self, request: web.Request) -> web.Response:
        """``DELETE /api/notifications/{id}``: emits ``notification.deleted``; gone from every list."""
        principal = self._verifier.from_request(request)
        item = await self._own(request, principal)
        event = NotificationDeleted(notification_id=item["id"], user_id=item["user_id"])
        written = await self._writer().append(
            [fact(event, user_id=item["user_id"], subject=item["id"], unique=item["id"])]
        )
        if not await self._ryw.offsets(written):
            return retry_later({"id": item["id"]})
        return web.Response(status=204)

    async def stats(self, request: web.Request) -> web.Response:
        """``GET /api/notifications/stats``: a user's figures, or global ones (``?global=true``, admin)."""
        principal = self._verifier.from_request(request)
        if bool_param(request, "global"):
            if not principal.has(SCOPE_ADMIN):
                raise Problem(403, "Forbidden", "global stats need the admin scope")
            result = await self._queries.stats(None)
            return web.json_response({"scope": "global", "user_id": None, **result.as_json()})
        user_id = whose(request, principal)
        result = await self._queries.stats(user_id)
        return web.json_response({"scope": "user", "user_id": user_id, **result.as_json()})
