"""aiohttp application factory: REST, WebSocket gateway, health and metrics."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from api.auth import TokenVerifier
from api.http_metrics import install as install_http_metrics
from api.problems import problem_middleware, problem_response
from api.publisher import Publisher
from api.rest.admin import AdminContext, register_admin
from api.rest.dev import DevRoutes
from api.rest.presence_routes import PresenceRoutes
from api.rest.routes import register_rest
from api.rest.write_limit import WriteLimit
from api.ws.gateway import Hub
from engine.settings import Settings
from projections.queries import NotificationQueries

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[None]]
STATIC = Path(__file__).parent / "static"
"""The demo page and the operator console (plain HTML, CSS and JS; no external resources)."""

SECURITY_HEADERS = {
    # The demo page and /api/docs load only their own files: no inline script or style, no
    # other origin. 'self' in connect-src covers the same-origin WebSocket (ws:, wss:).
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
        " base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
"""Sent with every response (pages, API, errors, static files, WebSocket upgrades)."""


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def create_app(
    *,
    verifier: TokenVerifier,
    queries: NotificationQueries,
    hub: Hub,
    checks: Mapping[str, Check],
    publisher: Publisher | None = None,
    settings: Settings | None = None,
    engine: AsyncEngine | None = None,
) -> web.Application:
    """The HTTP app; the caller owns the lifecycle of ``hub``, ``engine`` and the check targets."""
    settings = settings or hub.settings
    limit = WriteLimit(verifier, settings or hub.settings)  # per-user REST write rate limit (429)
    # A path with a trailing slash that only exists without it (``/api/notifications/``, as the
    # services Herald replaces spelled them) is a 308 to it: the method and body are kept.
    slash = web.normalize_path_middleware(append_slash=False, remove_slash=True, merge_slashes=False)
    app = web.Application(middlewares=[slash, problem_middleware, limit.middleware], client_max_size=1024 * 1024)
    app.on_response_prepare.append(_security_headers)
    register_rest(app, verifier=verifier, queries=queries, publisher=publisher, settings=settings)
    admin = AdminContext(verifier, queries, settings, engine=engine, publisher=publisher, presence=hub.presence)
    register_admin(app, admin)  # /api/admin/: the operator console's API (admin scope)
    app.router.add_get("/ws/notifications", hub.handle)
    app.router.add_get("/ws/notifications/", hub.handle)  # a WebSocket client does not follow redirects
    PresenceRoutes(verifier, hub.presence).register(app)
    app.on_shutdown.append(hub.disconnect_all)

    # JWKS keys are loaded before the port opens; a provider that cannot be reached stops the role.
    async def start_verifier(app: web.Application) -> None:
        await verifier.start()

    async def stop_verifier(app: web.Application) -> None:
        await verifier.stop()

    app.on_startup.append(start_verifier)
    app.on_cleanup.append(stop_verifier)
    if settings.dev_mode:  # set by `herald dev` only; production roles refuse HERALD_DEV_MODE
        DevRoutes(settings).register(app)

    async def demo_page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def console_page(request: web.Request) -> web.FileResponse:
        # The shell only: the page asks for an admin token and every action goes through /api/admin/.
        return web.FileResponse(STATIC / "console" / "index.html")

    app.router.add_get("/", demo_page)
    app.router.add_get("/console", console_page)
    app.router.add_static("/static/", STATIC)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        failed = []
        for name, check in checks.items():
            try:
                await check()
            except Exception as exc:  # noqa: BLE001 - any failure means not ready
                # The details (hosts, database names, versions) go to the log, not to the public port.
                log.warning("readiness check failed", extra={"check": name, "error": f"{type(exc).__name__}: {exc}"})
                failed.append(name)
        if failed:
            return problem_response(503, "Service Unavailable", "not ready", failed=failed)
        return web.json_response({"status": "ready", "checks": sorted(checks)})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    # Request ids, durations by route, and /metrics here unless `herald api` has an internal metrics port.
    install_http_metrics(app, settings=settings, engine=engine)
    return app
