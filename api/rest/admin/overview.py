"""``GET /api/admin/overview``: what the console's first page draws, in one request.

Throughput per ten seconds (accepted by priority, delivery attempts succeeded and failed
by channel and by priority), latency from request to first delivery, consumer lag per role and dead
letters per minute, over the last ``minutes`` (1 to 60). Counts come from the read
models; lag and dead letters from the broker through ``LogProbe`` (cached for a second,
so a page refreshing every two seconds costs the broker one probe however many operators
watch). Counts are per bucket: a page divides by ``bucket_seconds`` for a rate.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from aiohttp import web

from api.rest.admin import AdminContext, read_models, require_admin
from api.rest.admin.log_probe import LogProbe
from api.rest.admin.params import int_param
from schemas.codec import format_time

BUCKET_SECONDS = 10
"""Width of a throughput bucket."""


class OverviewRoutes:
    """Handler of ``/api/admin/overview``; owns the broker probe (closed with the app)."""

    def __init__(self, ctx: AdminContext) -> None:
        self._ctx = ctx
        self._probe = LogProbe(ctx.settings, self._positions)

    async def _positions(self, topic: str) -> dict[int, int]:
        return await read_models(self._ctx).projected_positions(topic)

    def register(self, app: web.Application) -> None:
        """Add the route, and stop the probe's broker clients on cleanup."""
        app.router.add_get("/api/admin/overview", self.overview)

        async def close_probe(app: web.Application) -> None:
            await self._probe.close()

        app.on_cleanup.append(close_probe)

    async def overview(self, request: web.Request) -> web.Response:
        """Figures of the last ``minutes``; broker figures missing (``broker_error``) when it is down."""
        require_admin(self._ctx, request)
        minutes = int_param(request, "minutes", 15, low=1, high=60)
        queries = read_models(self._ctx)
        now = datetime.now(UTC)
        epoch = now.timestamp()
        end = datetime.fromtimestamp(math.floor(epoch / BUCKET_SECONDS) * BUCKET_SECONDS + BUCKET_SECONDS, UTC)
        start = end - timedelta(minutes=minutes)
        flow = await queries.throughput(start, end, BUCKET_SECONDS)
        latency = await queries.latency(start, end)
        minute_end = datetime.fromtimestamp(math.floor(epoch / 60) * 60 + 60, UTC)
        minute_start = minute_end - timedelta(minutes=minutes)
        broker = await self._probe.figures(minute_start, minutes)
        buckets = [
            format_time(start + timedelta(seconds=i * BUCKET_SECONDS)) for i in range(minutes * 60 // BUCKET_SECONDS)
        ]
        return web.json_response(
            {
                "now": format_time(now),
                "bucket_seconds": BUCKET_SECONDS,
                "throughput": {
                    "buckets": buckets,
                    "accepted": flow.accepted,
                    "delivered": flow.delivered,
                    "failed": flow.failed,
                    "delivered_by_priority": flow.delivered_by_priority,
                    "failed_by_priority": flow.failed_by_priority,
                },
                "latency_ms": latency,
                "consumer_lag": [lag.as_json() for lag in broker.lag],
                "dead_letters": {
                    "buckets": [format_time(minute_start + timedelta(minutes=i)) for i in range(minutes)],
                    "counts": broker.dead_letters,
                },
                "totals": {
                    "accepted": sum(map(sum, flow.accepted.values())),
                    "delivered": sum(map(sum, flow.delivered.values())),
                    "failed": sum(map(sum, flow.failed.values())),
                    "dead_letters": sum(broker.dead_letters) if broker.error is None else None,
                },
                "broker_error": broker.error,
            }
        )


def register(app: web.Application, ctx: AdminContext) -> None:
    """Add the overview route."""
    OverviewRoutes(ctx).register(app)
