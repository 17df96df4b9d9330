"""Observability of the HTTP side: request ids, request durations by route, ``/metrics``.

Every request gets an id: the caller's ``X-Request-ID`` when it is sane (1-128
printable ASCII characters, no spaces), otherwise a fresh one; it is echoed in the
response and bound as the correlation id (``engine.correlation``) while the request is
handled, so every log line it causes carries it and the notifications it publishes
carry it as their CloudEvents ``correlationid``. Durations are observed by route
*template* (``/api/notifications/{id}``, never the raw path: one series per route, not
per id), and ``unmatched`` for paths no route knows. ``/metrics`` refreshes the
read-model gauges (``pending_notifications_count``) before it answers; with an internal
metrics port (``HERALD_METRICS_PORT``) a background task refreshes them instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from api.problems import Handler
from engine import correlation
from engine.settings import Settings
from projections.gauges import pending_count

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
SANE_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
"""What a caller's request id may be; anything else (too long, spaces, control bytes) is replaced."""

REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request handling time by route template (WebSocket sessions excluded)",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class _ReadModelGauge(Collector):
    """A gauge served only once an API process has read it: a worker or projector shows no stale 0."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self.value: float | None = None

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation)
        if self.value is not None:
            family.add_metric([], self.value)
        yield family


PENDING = _ReadModelGauge(
    "pending_notifications_count",
    "Notifications accepted and not yet in a terminal state (read model; refreshed on scrape)",
)
REGISTRY.register(PENDING)

REFRESH_SECONDS = 5.0
"""How often the read-model gauges are refreshed when an internal metrics port serves them."""
REFRESH_TIMEOUT = 2.0
"""A scrape waits this long for the read model; past it the last value is served."""

_REQUEST_ID = web.RequestKey("herald_request_id", str)
_TASK = web.AppKey("herald_metrics_refresh", asyncio.Task[None])
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def request_id(request: web.BaseRequest) -> str:
    """The caller's ``X-Request-ID`` if sane, else a new id."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def route_template(request: web.Request) -> str:
    """The matched route's template (``/api/notifications/{id}``), or ``unmatched``."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost middleware: request id in and out, correlation id bound, duration observed."""
    rid = request_id(request)
    request[_REQUEST_ID] = rid
    started = time.perf_counter()
    status = 500
    response: web.StreamResponse | None = None
    try:
        with correlation.bound(rid):
            response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # a redirect or an error raised past the problem middleware
        status = exc.status
        exc.headers[REQUEST_ID_HEADER] = rid
        raise
    finally:
        if not isinstance(response, web.WebSocketResponse):  # a session's length is not a request's
            elapsed = time.perf_counter() - started
            route = route_template(request)
            REQUEST_DURATION.labels(request.method, route, str(status)).observe(elapsed)
            level = logging.INFO if request.method in _WRITES or status >= 500 else logging.DEBUG
            if log.isEnabledFor(level):
                log.log(
                    level,
                    "http request",
                    extra={
                        "method": request.method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "request_id": rid,
                        "correlation_id": rid,
                    },
                )


async def _echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    rid = request.get(_REQUEST_ID)
    if rid is not None:
        response.headers[REQUEST_ID_HEADER] = rid


async def refresh(engine: AsyncEngine | None) -> None:
    """Read the read-model gauges now (bounded; on failure the last values stay and it is logged)."""
    if engine is None:
        return
    try:
        PENDING.value = float(await asyncio.wait_for(pending_count(engine), REFRESH_TIMEOUT))
    except Exception as exc:  # noqa: BLE001 - a scrape must answer even when the database does not
        log.warning("read-model gauges not refreshed", extra={"error": f"{type(exc).__name__}: {exc}"})


def install(app: web.Application, *, settings: Settings, engine: AsyncEngine | None) -> None:
    """Add request ids, request durations and ``/metrics`` (or the gauges' refresher) to ``app``.

    Call before the app starts: the middleware goes first, so it sees every answer.
    """
    app.middlewares.insert(0, observe)
    app.on_response_prepare.append(_echo_request_id)

    if not settings.metrics_port:

        async def metrics(request: web.Request) -> web.Response:
            await refresh(engine)
            return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app.router.add_get("/metrics", metrics)
        return

    # `herald api` with an internal port: that server cannot await, so the gauges are kept fresh here.
    async def refresher() -> None:
        while True:
            await refresh(engine)
            await asyncio.sleep(REFRESH_SECONDS)

    async def start(app: web.Application) -> None:
        app[_TASK] = asyncio.create_task(refresher(), name="metrics-refresh")

    async def stop(app: web.Application) -> None:
        task = app[_TASK]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
