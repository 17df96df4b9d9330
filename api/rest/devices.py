"""REST: devices — register, list, deactivate (``device.registered`` / ``device.unregistered``).

A device is its ``platform`` and its ``device_token``. The platforms are those the
channels of the registry declare (``schemas.channels``: APNs declares ``ios``, the
default); each platform's channel gives the token rule (ios: 64 hexadecimal characters,
stored lower-case). An unknown platform is refused with the platforms there are.

A registration of a token another user holds takes it over: ``device.unregistered`` for
the previous owner is appended before the new ``device.registered``, so the previous
owner's pushes stop going to the phone (``engine.devices``). A user holds at most
``HERALD_MAX_DEVICES_PER_USER`` active tokens; one more unregisters the oldest.
"""

from __future__ import annotations

from aiohttp import web

from api.auth import SCOPE_ADMIN, TokenVerifier
from api.problems import Problem
from api.publisher import Publisher
from api.rest.envelopes import fact
from api.rest.params import bool_param, json_body, path_id, whose
from api.rest.read_your_writes import ReadYourWrites
from engine.devices import ActiveDevice, decide_registration
from engine.settings import Settings
from projections.queries import NotificationQueries
from schemas import channels
from schemas.channels import DEFAULT_PLATFORM, DevicePlatform
from schemas.codec import parse_time
from schemas.events import DeviceRegistered, DeviceUnregistered

_FIELDS = frozenset({"device_token", "platform", "name", "user_id", "is_active"})
"""``is_active`` as the push service Herald replaces took it: true registers, false deactivates."""


def _platform(value: object, *, status: int) -> DevicePlatform:
    """The declared platform named ``value``; ``status`` (problem+json listing the platforms) otherwise."""
    known = channels.platforms()
    declared = known.get(value) if isinstance(value, str) else None
    if declared is None:
        names = list(known)
        title = "Unprocessable Content" if status == 422 else "Bad Request"
        raise Problem(status, title, f"platform must be one of {names}", platforms=names)
    return declared


def _location(platform: str, token: str) -> str:
    """The device's URL: ``/api/devices/{token}``, with ``?platform=`` unless it is ios."""
    return f"/api/devices/{token}" + ("" if platform == DEFAULT_PLATFORM else f"?platform={platform}")


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
        raw_token, name = body.get("device_token"), body.get("name")
        user_id = body.get("user_id", principal.subject)
        if user_id != principal.subject and not principal.has(SCOPE_ADMIN):
            raise Problem(403, "Forbidden", "registering a device for another user needs the admin scope")
        declared = _platform(body.get("platform", DEFAULT_PLATFORM), status=422)
        platform, token = declared.name, declared.canonical(raw_token)
        if token is None:
            raise Problem(422, "Unprocessable Content", f"device_token of platform {platform}: {declared.token_hint}")
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            raise Problem(422, "Unprocessable Content", "name must be a string of at most 200 characters")
        if not isinstance(user_id, str) or not 1 <= len(user_id) <= 200:
            raise Problem(422, "Unprocessable Content", "user_id must be 1 to 200 characters")
        is_active = body.get("is_active", True)
        if not isinstance(is_active, bool):
            raise Problem(422, "Unprocessable Content", "is_active must be true or false")
        writer = self._writer()
        owner = (await self._queries.device_owners([token], platform)).get(token)
        if not is_active:  # the same as DELETE of the device, for its owner
            if owner is None or owner[0] != user_id:
                raise Problem(404, "Not Found", "no such device")
            return await self._deactivate(user_id, token, platform, active=owner[1])
        active = [
            ActiveDevice(d["device_token"], parse_time(d["registered_at"]), d["platform"])
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
        location = _location(platform, token)
        body_out = {"device_token": token, "user_id": user_id, "platform": platform, "name": name, "active": True}
        if not await self._ryw.offsets(written):
            return web.json_response(
                {**body_out, "projected": False}, status=202, headers={"Retry-After": "1", "Location": location}
            )
        devices = {(d["platform"], d["device_token"]): d for d in await self._queries.devices(user_id)}
        return web.json_response(devices.get((platform, token), body_out), status=201, headers={"Location": location})

    async def list_devices(self, request: web.Request) -> web.Response:
        """``GET /api/devices``: the caller's devices (``?active=true`` for active ones only)."""
        principal = self._verifier.from_request(request)
        user_id = whose(request, principal)
        devices = await self._queries.devices(user_id, active_only=bool(bool_param(request, "active")))
        return web.json_response({"results": devices})

    async def delete(self, request: web.Request) -> web.Response:
        """``DELETE /api/devices/{device_token}?platform=`` (ios unless named): deactivate; 404 unless owned."""
        principal = self._verifier.from_request(request)
        declared = _platform(request.query.get("platform", DEFAULT_PLATFORM), status=400)
        token = path_id(request, "device_token")
        token = token.lower() if declared.lower_case else token
        owners = await self._queries.device_owners([token], declared.name)
        owner = owners.get(token)
        if owner is None or (owner[0] != principal.subject and not principal.has(SCOPE_ADMIN)):
            raise Problem(404, "Not Found", "no such device")
        answer = await self._deactivate(owner[0], token, declared.name, active=owner[1])
        return answer if answer.status == 202 else web.Response(status=204)

    async def _deactivate(self, user_id: str, token: str, platform: str, *, active: bool) -> web.Response:
        """``device.unregistered`` unless it is inactive already; 200 with the device, 202 until projected."""
        if active:
            event = DeviceUnregistered(user_id=user_id, device_token=token, platform=platform)
            written = await self._writer().append([fact(event, user_id=user_id, subject=None)])
            if not await self._ryw.offsets(written):
                return web.json_response(
                    {"device_token": token, "projected": False}, status=202, headers={"Retry-After": "1"}
                )
        devices = {(d["platform"], d["device_token"]): d for d in await self._queries.devices(user_id)}
        fallback = {"device_token": token, "user_id": user_id, "platform": platform, "active": False}
        return web.json_response(devices.get((platform, token), fallback))
