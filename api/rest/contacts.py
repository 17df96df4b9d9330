"""REST: a user's email address, webhook URL and channel preferences (``contact.updated``)."""

from __future__ import annotations

from aiohttp import web

from api.auth import SCOPE_ADMIN, SCOPE_WRITE, TokenVerifier
from api.problems import Problem
from api.publisher import Publisher
from api.rest.envelopes import fact
from api.rest.params import MAX_ID_LENGTH, json_body, path_id
from api.rest.read_your_writes import ReadYourWrites
from engine.email_address import InvalidAddress, single_address
from engine.settings import Settings
from engine.webhook import InvalidWebhook, check_url
from projections.queries import NotificationQueries
from schemas.codec import event_from_data
from schemas.errors import InvalidMessage

_FIELDS = frozenset({"email", "channels", "email_fallback_minutes", "webhook_url"})


class ContactRoutes:
    """Handlers of ``/api/users/{id}/contact``: services write, the user and services read."""

    def __init__(
        self, verifier: TokenVerifier, queries: NotificationQueries, publisher: Publisher | None, settings: Settings
    ) -> None:
        self._verifier = verifier
        self._queries = queries
        self._publisher = publisher
        self._ryw = ReadYourWrites(queries, settings.read_your_writes_timeout)
        self._allow_loopback_http = settings.webhook_allow_loopback_http

    def register(self, app: web.Application) -> None:
        """Add the routes to ``app``."""
        app.router.add_put("/api/users/{id}/contact", self.put)
        app.router.add_get("/api/users/{id}/contact", self.get)

    async def put(self, request: web.Request) -> web.Response:
        """``PUT /api/users/{id}/contact`` (``notifications:write`` scope)."""
        principal = self._verifier.from_request(request)
        if not principal.has(SCOPE_WRITE):
            raise Problem(403, "Forbidden", "contact details are set by services with the notifications:write scope")
        if self._publisher is None:
            raise Problem(503, "Service Unavailable", "this API instance has no broker connection")
        user_id = request.match_info["id"]
        if not 1 <= len(user_id) <= MAX_ID_LENGTH or "\x00" in user_id:
            raise Problem(422, "Unprocessable Content", f"a user id has 1 to {MAX_ID_LENGTH} characters")
        body = await json_body(request, max_bytes=4096)
        unknown = sorted(set(body) - _FIELDS)
        if unknown:
            raise Problem(422, "Unprocessable Content", f"unknown field(s): {', '.join(unknown)}")
        email = body.get("email")
        if email is not None:
            if not isinstance(email, str):
                raise Problem(422, "Unprocessable Content", "email must be an address or null")
            try:
                # Exactly one plain address: a list in a To header would mail every address in it.
                body["email"] = single_address(email)
            except InvalidAddress as exc:
                raise Problem(422, "Unprocessable Content", str(exc)) from None
        url = body.get("webhook_url")
        if url is not None:
            if not isinstance(url, str):
                raise Problem(422, "Unprocessable Content", "webhook_url must be a URL or null")
            try:
                check_url(url, allow_loopback_http=self._allow_loopback_http)
            except InvalidWebhook as exc:
                raise Problem(422, "Unprocessable Content", f"webhook_url: {exc}") from None
        try:
            event = event_from_data("contact.updated", {**body, "user_id": user_id})
        except InvalidMessage as exc:
            raise Problem(422, "Unprocessable Content", exc.reason) from None
        written = await self._publisher.append([fact(event, user_id=user_id, subject=None)])
        if not await self._ryw.offsets(written):
            return web.json_response({"user_id": user_id, "projected": False}, status=202, headers={"Retry-After": "1"})
        return web.json_response(await self._queries.contact(user_id))

    async def get(self, request: web.Request) -> web.Response:
        """``GET /api/users/{id}/contact``: the user themself, or a service / admin."""
        principal = self._verifier.from_request(request)
        user_id = path_id(request)
        allowed = user_id == principal.subject or principal.has(SCOPE_WRITE) or principal.has(SCOPE_ADMIN)
        contact = await self._queries.contact(user_id) if allowed else None
        if contact is None:
            raise Problem(404, "Not Found", "no contact details for this user")
        return web.json_response(contact)
