"""aiohttp application factory: REST, WebSocket gateway, health and metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from api.auth import TokenVerifier
from api.dev import DevRoutes
from api.gateway import Hub
from api.presence_routes import PresenceRoutes
from api.problems import problem_middleware, problem_response
from api.publisher import Publisher
from api.rest import register_rest
from api.write_limit import WriteLimit
from engine.settings import Settings
from projections.queries import NotificationQueries

Check = Callable[[], Awaitable[None]]
STATIC = Path(__file__).parent / "static"
"""The demo page (plain HTML, CSS and JS; no external resources)."""


def create_app(
    *,
    verifier: TokenVerifier,
    queries: NotificationQueries,
    hub: Hub,
    checks: Mapping[str, Check],
    publisher: Publisher | None = None,
    settings: Settings | None = None,
) -> web.Application:
    """The HTTP app; the caller owns the lifecycle of ``hub`` and the check targets."""
    limit = WriteLimit(verifier, settings or hub.settings)  # per-user REST write rate limit (429)
    app = web.Application(middlewares=[problem_middleware, limit.middleware], client_max_size=1024 * 1024)
    register_rest(app, verifier=verifier, queries=queries, publisher=publisher, settings=settings or hub.settings)
    app.router.add_get("/ws/notifications", hub.handle)
    PresenceRoutes(verifier, hub.presence).register(app)
    app.on_shutdown.append(hub.disconnect_all)
    if hub.settings.dev_mode:
        DevRoutes(hub.settings).register(app)

    async def demo_page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    app.router.add_get("/", demo_page)
    app.router.add_static("/static/", STATIC)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        failures = {}
        for name, check in checks.items():
            try:
                await check()
            except Exception as exc:  # noqa: BLE001 - any failure means not ready; report it
                failures[name] = f"{type(exc).__name__}: {exc}"
        if failures:
            return problem_response(503, "Service Unavailable", "dependencies unreachable", checks=failures)
        return web.json_response({"status": "ready", "checks": sorted(checks)})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
