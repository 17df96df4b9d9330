"""Per-user rate limit on REST writes: a token bucket per caller, answered with 429.

Every write (POST, PUT, PATCH, DELETE under ``/api/``) of a user token takes one token
from the caller's bucket (``HERALD_WRITE_BURST`` at once, ``HERALD_WRITE_RATE_PER_SECOND``
sustained). An empty bucket answers ``429`` problem+json with ``Retry-After`` before the
handler runs, so nothing is published. Service tokens (``notifications:write`` or
``admin``) are trusted callers and are not limited here; what they send is limited per
recipient by the stream's admission rate limit.

The buckets live in this API process: behind a load balancer with N instances a user
gets at most N times the rate. Memory is bounded: at most ``MAX_TRACKED`` callers are
remembered, the least recently seen forgotten first (a forgotten caller starts full).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import Counter

from api.auth import SCOPE_WRITE, TokenVerifier
from api.problems import Problem, problem_response
from engine.settings import Settings
from engine.token_bucket import Bucket, BucketPolicy, take

MAX_TRACKED = 100_000
"""Callers whose buckets are kept at once."""
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

WRITES_LIMITED = Counter("api_writes_rate_limited_total", "REST writes refused with 429 by the per-user rate limit")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WriteLimit:
    """The buckets of this process and the middleware that applies them."""

    def __init__(
        self, verifier: TokenVerifier, settings: Settings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._verifier = verifier
        self._policy = BucketPolicy(rate=settings.write_rate_per_second, burst=settings.write_burst)
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()
        self._clock = clock

    def retry_after(self, user_id: str) -> float:
        """Take a token for ``user_id``: 0 when allowed, else seconds until the next one."""
        taken = take(self._buckets.get(user_id), self._policy, now=self._clock())
        self._buckets[user_id] = taken.bucket
        self._buckets.move_to_end(user_id)
        while len(self._buckets) > MAX_TRACKED:
            self._buckets.popitem(last=False)
        return taken.retry_after_seconds

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refuse a user's write with 429 when their bucket is empty."""
        if request.method not in WRITE_METHODS or not request.path.startswith("/api/"):
            return await handler(request)
        try:
            principal = self._verifier.from_request(request)
        except Problem:
            return await handler(request)  # not authenticated: the handler answers 401
        if principal.has(SCOPE_WRITE):
            return await handler(request)
        wait = self.retry_after(principal.subject)
        if wait > 0:
            WRITES_LIMITED.inc()
            seconds = max(1, math.ceil(wait))
            return problem_response(
                429,
                "Too Many Requests",
                f"at most {self._policy.burst} writes at once and {self._policy.rate:g} per second per user;"
                f" retry in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )
        return await handler(request)
