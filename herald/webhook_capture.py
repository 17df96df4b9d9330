"""A local webhook receiver for ``herald dev``: the webhook channel's stand-in, like the SMTP capture.

A developer points a user's contact at it (``webhook_url`` =
``http://127.0.0.1:PORT/any/path``) and sees every POST in the log (``"message":
"webhook received"``) and at ``GET /received``. It checks each POST's Standard
Webhooks signature with the dev secret and answers 401 to a bad or stale one, so a
signing problem shows up in development, not at the first real receiver.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from types import TracebackType
from typing import Any

from aiohttp import web

from engine.webhook import signing_key, verify

log = logging.getLogger("herald.webhook")

MAX_KEPT = 200
"""Posts kept for ``GET /received``."""
MAX_BODY = 64 * 1024
"""Largest POST body accepted."""


class WebhookCapture:
    """``async with WebhookCapture(secret) as capture``: listening on ``capture.host:capture.port``."""

    def __init__(self, secret: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self._key = signing_key(secret)
        self.received: deque[dict[str, Any]] = deque(maxlen=MAX_KEPT)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Base URL to put in a contact's ``webhook_url`` (any path below it works)."""
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> WebhookCapture:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/received", self._list)
        app.router.add_post("/{tail:.*}", self._receive)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        why = verify(self._key, headers, body, now=time.time())
        if why is not None:
            log.warning("webhook refused", extra={"path": request.path, "error": why})
            return web.Response(status=401, text=why)
        try:
            payload = json.loads(body)
        except ValueError:
            return web.Response(status=400, text="not JSON")
        entry = {"path": request.path, "webhook_id": headers["webhook-id"], "payload": payload}
        self.received.append(entry)
        data = payload.get("data", {}) if isinstance(payload, dict) else {}
        log.info(
            "webhook received",
            extra={"path": request.path, "notification_id": data.get("notification_id"), "title": data.get("title")},
        )
        return web.Response(status=204)

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.received))
