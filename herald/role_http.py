"""The internal HTTP port of ``herald worker`` and ``herald projector``: /metrics, /healthz, /readyz.

The API serves these on its own port; the two roles without one serve them on
``HERALD_METRICS_PORT`` (9100 in compose), so an orchestrator probes every role the same way:

- ``/healthz``: the process answers (liveness);
- ``/readyz``: 200 once the role is up and working, 503 with the failed checks (problem+json)
  while it starts, while the worker rebalances, when the projector's database is unreachable,
  or at once when a background task died (the supervisor; the process then exits 1).

The port opens before the role's dependencies are reached, so /metrics and a 503 /readyz
answer while the role waits for the broker or the database (``herald.startup``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from engine.settings import Settings
from herald.stack import Stack

log = logging.getLogger(__name__)

Check = Callable[[Stack], Awaitable[None]]


class RoleHttp:
    """Serve the role's probes and metrics; ``attach(stack)`` once the role's stack is up."""

    def __init__(self, settings: Settings, role: str) -> None:
        self._settings = settings
        self._role = role
        self._stack: Stack | None = None
        self._runner: web.AppRunner | None = None

    def attach(self, stack: Stack | None) -> None:
        """The running stack (``None`` again while it stops): /readyz checks it from now on."""
        self._stack = stack

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._settings.http_host, self._settings.metrics_port).start()
        log.info("metrics and probes listening", extra={"port": self._settings.metrics_port, "role": self._role})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "role": self._role})

    async def _readyz(self, request: web.Request) -> web.Response:
        stack = self._stack
        if stack is None:
            return _not_ready(self._role, ["starting"])
        checks: dict[str, Check] = {"tasks": _tasks}
        if self._role == "worker":
            checks["worker"] = _worker
        if self._role == "projector":
            checks["database"] = _database
        failed = []
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check(stack), 5)
            except Exception as exc:  # noqa: BLE001 - any failure means not ready
                log.warning("readiness check failed", extra={"check": name, "error": f"{type(exc).__name__}: {exc}"})
                failed.append(name)
        if failed:
            return _not_ready(self._role, failed)
        return web.json_response({"status": "ready", "role": self._role, "checks": sorted(checks)})


def _not_ready(role: str, failed: list[str]) -> web.Response:
    body = {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": f"{role} not ready",
        "failed": failed,
    }
    return web.json_response(body, status=503, content_type="application/problem+json")


async def _tasks(stack: Stack) -> None:
    stack.supervisor.check()


async def _worker(stack: Stack) -> None:
    app = stack.faust_app
    if app is None:
        raise RuntimeError("worker not started yet")
    if app.rebalancing:
        raise RuntimeError("worker is rebalancing")


async def _database(stack: Stack) -> None:
    from sqlalchemy import text

    if stack.engine is None:
        raise RuntimeError("no database engine yet")
    async with stack.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
