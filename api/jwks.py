"""Signing keys of an identity provider, fetched from its JWKS URL and kept fresh in the background.

PyJWT's ``PyJWKClient`` fetches with blocking ``urllib``; token checks happen inside request
handlers on the event loop, so they only ever read the keys held here, and every fetch runs in
a worker thread: at start (a failure stops the role, loudly), every
``HERALD_JWT_JWKS_REFRESH_SECONDS``, and soon after a token names an unknown key id (a key
rotation), at most once per ``MIN_FETCH_INTERVAL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import jwt
from prometheus_client import Counter

log = logging.getLogger(__name__)

MIN_FETCH_INTERVAL = 10.0
"""Seconds between two fetches at least: unknown key ids in forged tokens cannot hammer the provider."""
FETCH_TIMEOUT = 5.0
"""Seconds one fetch of the key set may take."""

JWKS_FETCH_FAILURES = Counter("herald_jwks_fetch_failures_total", "JWKS fetches that failed (old keys kept)")


class JwksKeys:
    """The current signing keys by key id; ``start`` fetches them, then a task refreshes them."""

    def __init__(self, url: str, refresh_seconds: float) -> None:
        # The set cache is bypassed (every fetch is a forced refresh): the keys live in ``_keys``.
        self._client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=FETCH_TIMEOUT)
        self._refresh_seconds = refresh_seconds
        self._keys: dict[str, jwt.PyJWK] = {}
        self._wanted = asyncio.Event()
        self._last_fetch = 0.0
        self._task: asyncio.Task[None] | None = None

    def get(self, key_id: str) -> jwt.PyJWK | None:
        """The key with ``key_id``; ``None`` (and a fetch soon) when the provider's set lacks it."""
        key = self._keys.get(key_id)
        if key is None:
            self._wanted.set()
        return key

    async def start(self) -> None:
        """Fetch the keys once (raising if the provider cannot be reached), then keep them fresh."""
        await self.fetch()
        self._task = asyncio.create_task(self._run(), name="jwks-refresh")

    async def stop(self) -> None:
        """Stop refreshing."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def fetch(self) -> None:
        """Replace the keys with the provider's current signing keys."""
        self._last_fetch = time.monotonic()
        keys = await asyncio.to_thread(self._client.get_signing_keys, True)
        self._keys = {key.key_id: key for key in keys if key.key_id}
        log.info("jwks keys loaded", extra={"keys": sorted(self._keys)})

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), self._refresh_seconds)
            pause = self._last_fetch + MIN_FETCH_INTERVAL - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            self._wanted.clear()
            try:
                await self.fetch()
            except (jwt.PyJWTError, ValueError, OSError) as exc:  # provider down, or a malformed set
                # Keep serving with the keys we have: a provider outage must not log everyone out.
                JWKS_FETCH_FAILURES.inc()
                log.warning("jwks fetch failed; keeping the previous keys", extra={"error": str(exc)})
