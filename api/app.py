"""aiohttp application factory: REST, WebSocket gateway, health and metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from api.auth import TokenVerifier
from api.gateway import Hub
from api.notifications import NotificationRoutes
from api.problems import problem_middleware, problem_response
from projections.queries import NotificationQueries

Check = Callable[[], Awaitable[None]]


def create_app(
    *,
    verifier: TokenVerifier,
    queries: NotificationQueries,
    hub: Hub,
    checks: Mapping[str, Check],
) -> web.Application:
    """The HTTP app; the caller owns the lifecycle of ``hub`` and the check targets."""
    app = web.Application(middlewares=[problem_middleware], client_max_size=1024 * 1024)
    NotificationRoutes(verifier, queries).register(app)
    app.router.add_get("/ws/notifications", hub.handle)

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
