"""REST: APNs devices — register, list, deactivate (``device.registered`` / ``device.unregistered``).

A registration of a token another user holds takes it over: ``device.unregistered`` for
the previous owner is appended before the new ``device.registered``, so the previous
owner's pushes stop going to the phone (``engine.devices``). A user holds at most
``HERALD_MAX_DEVICES_PER_USER`` active tokens; one more unregisters the oldest.
"""

from __future__ import annotations

from aiohttp import web

from api.auth import SCOPE_ADMIN, TokenVerifier
from api.bulk import DEVICE_TOKEN
from api.envelopes import fact
from api.params import bool_param, json_body, path_id, whose
from api.problems import Problem
from api.publisher import Publisher
from api.read_your_writes import ReadYourWrites
from engine.devices import ActiveDevice, decide_registration
from engine.settings import Settings
from projections.queries import NotificationQueries
from schemas.codec import parse_time
from schemas.events import DeviceRegistered, DeviceUnregistered

_FIELDS = frozenset({"device_token", "platform", "name", "user_id"})


class DeviceRoutes:
    """Handlers of ``/api/devices``; a user manages their own tokens (admins anyone's)."""

    def __init__(
        self, verifier: TokenVerifier, queries: NotificationQueries, publisher: Publisher | None, settings: Settings
    ) -> None:
        self._verifier = verifier
        self._queries = queries
        self._publisher = publisher
        self._max_devices = settings.max_devices_per_user
        self._ryw = ReadYourWrites(queries, settings.read_your_writes_timeout)

    def register(self, app: web.Application) -> None:
        """Add the routes to ``app``."""
        app.router.add_post("/api/devices", self.create)
        app.router.add_get("/api/devices", self.list_devices)
        app.router.add_delete("/api/devices/{device_token}", self.delete)

    def _writer(self) -> Publisher:
        if self._publisher is None:
            raise Problem(503, "Service Unavailable", "this API instance has no broker connection")
        return self._publisher

    async def create(self, request: web.Request) -> web.Response:
        """``POST /api/devices``: register (or re-register, or take over) a device token."""
        principal = self._verifier.from_request(request)
        body = await json_body(request, max_bytes=4096)
        unknown = sorted(set(body) - _FIELDS)
        if unknown:
            raise Problem(422, "Unprocessable Content", f"unknown field(s): {', '.join(unknown)}")
        token, platform, name = body.get("device_token"), body.get("platform", "ios"), body.get("name")
        user_id = body.get("user_id", principal.subject)
        if user_id != principal.subject and not principal.has(SCOPE_ADMIN):
            raise Problem(403, "Forbidden", "registering a device for another user needs the admin scope")
        if not isinstance(token, str) or not DEVICE_TOKEN.match(token):
            raise Problem(422, "Unprocessable Content", "device_token must be 64 hexadecimal characters")
        if platform != "ios":
            raise Problem(422, "Unprocessable Content", "platform must be 'ios'")
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            raise Problem(422, "Unprocessable Content", "name must be a string of at most 200 characters")
        if not isinstance(user_id, str) or not 1 <= len(user_id) <= 200:
            raise Problem(422, "Unprocessable Content", "user_id must be 1 to 200 characters")
        token = token.lower()
        writer = self._writer()
        owner = (await self._queries.device_owners([token])).get(token)
        active = [
            ActiveDevice(d["device_token"], parse_time(d["registered_at"]))
            for d in await self._queries.devices(user_id, active_only=True)
        ]
        decision = decide_registration(
            DeviceRegistered(user_id=user_id, device_token=token, platform=platform, name=name),
            previous_owner=owner[0] if owner is not None and owner[1] else None,
            active=active,
            cap=self._max_devices,
        )
        # In order, one acknowledged record at a time: the user's own unregistrations
        # reach the registry before the registration, so the cap is never exceeded.
        written = await writer.append([fact(e, user_id=e.user_id, subject=None) for e in decision.events])
        location = f"/api/devices/{token}"
        body_out = {"device_token": token, "user_id": user_id, "platform": platform, "name": name, "active": True}
        if not await self._ryw.offsets(written):
            return web.json_response(
                {**body_out, "projected": False}, status=202, headers={"Retry-After": "1", "Location": location}
            )
        devices = {d["device_token"]: d for d in await self._queries.devices(user_id)}
        return web.json_response(devices.get(token, body_out), status=201, headers={"Location": location})

    async def list_devices(self, request: web.Request) -> web.Response:
        """``GET /api/devices``: the caller's devices (``?active=true`` for active ones only)."""
        principal = self._verifier.from_request(request)
        user_id = whose(request, principal)
        devices = await self._queries.devices(user_id, active_only=bool(bool_param(request, "active")))
        return web.json_response({"results": devices})

    async def delete(self, request: web.Request) -> web.Response:
        """``DELETE /api/devices/{device_token}``: deactivate; 404 unless the caller owns it."""
        principal = self._verifier.from_request(request)
        token = path_id(request, "device_token").lower()
        owners = await self._queries.device_owners([token])
        owner = owners.get(token)
        if owner is None or (owner[0] != principal.subject and not principal.has(SCOPE_ADMIN)):
            raise Problem(404, "Not Found", "no such device")
        if owner[1]:
            event = DeviceUnregistered(user_id=owner[0], device_token=token)
            written = await self._writer().append([fact(event, user_id=owner[0], subject=None)])
            if not await self._ryw.offsets(written):
                return web.json_response(
                    {"device_token": token, "projected": False}, status=202, headers={"Retry-After": "1"}
                )
        return web.Response(status=204)
