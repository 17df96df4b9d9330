"""Plain HTTP/1.1 inspection and control API (aiohttp) for the emulator.

Local development tooling: no authentication, bind it to loopback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from herald.apns_emulator._emulator import ApnsEmulator


def build_inspection_app(emulator: ApnsEmulator) -> web.Application:
    """Routes: ``GET/DELETE /received``, ``POST /tokens/{token}/unregistered|bad``,
    ``POST /fail`` and ``POST /reset``."""

    async def list_received(request: web.Request) -> web.Response:
        token = request.query.get("token")
        records = emulator.received
        if token:
            records = [r for r in records if r.token.lower() == token.lower()]
        return web.json_response([r.to_json() for r in records])

    async def clear_received(request: web.Request) -> web.Response:
        emulator.clear()
        return web.Response(status=204)

    async def unregister(request: web.Request) -> web.Response:
        emulator.unregister(request.match_info["token"])
        return web.Response(status=204)

    async def mark_bad(request: web.Request) -> web.Response:
        emulator.mark_bad(request.match_info["token"])
        return web.Response(status=204)

    async def fail(request: web.Request) -> web.Response:
        try:
            body: Any = await request.json()
        except ValueError:
            return _bad_request("body must be JSON")
        if not isinstance(body, dict):
            return _bad_request("body must be a JSON object")
        status, reason = body.get("status"), body.get("reason")
        count, token = body.get("count", 1), body.get("token")
        # bool is an int subclass; refuse it so {"status": true} is an error.
        if not isinstance(status, int) or isinstance(status, bool):
            return _bad_request("status must be an integer")
        if not isinstance(count, int) or isinstance(count, bool):
            return _bad_request("count must be an integer")
        if reason is not None and not isinstance(reason, str):
            return _bad_request("reason must be a string or null")
        if token is not None and not isinstance(token, str):
            return _bad_request("token must be a string or null")
        try:
            emulator.fail_next(status, reason, count=count, token=token)
        except ValueError as exc:
            return _bad_request(str(exc))
        return web.Response(status=204)

    async def reset(request: web.Request) -> web.Response:
        emulator.reset()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/received", list_received)
    app.router.add_delete("/received", clear_received)
    app.router.add_post("/tokens/{token}/unregistered", unregister)
    app.router.add_post("/tokens/{token}/bad", mark_bad)
    app.router.add_post("/fail", fail)
    app.router.add_post("/reset", reset)
    return app


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)
