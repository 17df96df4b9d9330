"""Webhook channel: an HTTP adapter of the ``Sink`` port (``streams.delivery_attempt``).

Lets a user (or the service acting for them) receive notifications on their own
server: each one is POSTed as JSON to the ``webhook_url`` of the user's contact
(``contact.updated``, from the device registry's table), if the contact's channels
include ``webhook``. Every POST is signed Standard Webhooks style (``engine.webhook``):
``webhook-id`` (the same on every retry of a notification to a URL, for the receiver to
drop repeats), ``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256>``
with ``HERALD_WEBHOOK_SECRET``. Redirects are not followed (the signature was for this URL).

Outcomes: 2xx -> the ``webhook-id`` is the provider id; 408, 429, 5xx, a timeout, a
refused or lost connection -> retriable (the generic retry path, backoff with jitter);
any other answer (4xx, 3xx) -> permanent. A URL that is not https (or loopback http
where allowed) is refused before sending, permanently, and so is a host name that resolves
only to internal addresses: the connector's resolver (``PublicResolver``) hands aiohttp only
the addresses ``engine.webhook.reachable`` allows, so a name cannot point (or re-point, DNS
rebinding) Herald at its own network.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import aiohttp
import aiohttp.abc
import faust
import orjson

from engine.retry import DeliveryError
from engine.settings import Settings
from engine.webhook import InvalidWebhook, check_url, headers, message_id, reachable, signing_key
from schemas.codec import event_to_data, format_time
from schemas.events import NotificationAccepted
from streams.device_registry import DeviceRegistry
from streams.topics import Topics

EVENT_TYPE = "notification"
"""``type`` of the POSTed JSON."""
_LEFT_OUT = ("channels", "email", "device_token")
"""Fields of ``notification.accepted`` that are about other channels' targets, not sent."""
_DETAIL_BYTES = 200
"""How much of an error answer's body is kept for the failure reason."""


def payload(accepted: NotificationAccepted, *, now: float) -> bytes:
    """The POST body: ``{"type", "timestamp", "data"}`` with the notification as ``data``."""
    data = {k: v for k, v in event_to_data(accepted).items() if k not in _LEFT_OUT}
    stamp = format_time(datetime.fromtimestamp(now, UTC))
    return orjson.dumps({"type": EVENT_TYPE, "timestamp": stamp, "data": data})


def classify(status: int, detail: str) -> DeliveryError:
    """A ``DeliveryError`` for a non-2xx answer: 408, 429 and 5xx retriable, the rest permanent."""
    retriable = status in (408, 429) or status >= 500
    text = f"HTTP {status}" + (f": {detail}" if detail else "")
    return DeliveryError(text, retriable=retriable)


class InternalAddress(OSError):
    """A webhook host resolved only to addresses Herald must not connect to."""


class PublicResolver(aiohttp.abc.AbstractResolver):
    """aiohttp's resolver, keeping only the addresses a webhook may be sent to.

    aiohttp connects to exactly what its resolver returns (and never asks it for an IP
    literal, which ``check_url`` judges), so the check holds for every connection,
    including a name whose DNS answer changed since the URL was stored."""

    def __init__(self, *, allow_loopback: bool) -> None:
        self._inner = aiohttp.DefaultResolver()
        self._allow_loopback = allow_loopback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        try:
            kept = set(reachable(host, [r["host"] for r in results], allow_loopback=self._allow_loopback))
        except InvalidWebhook as exc:
            raise InternalAddress(str(exc)) from None
        return [r for r in results if r["host"] in kept]

    async def close(self) -> None:
        await self._inner.close()


class WebhookSink:
    """POSTs signed notifications to users' webhook URLs; ``Sink`` of the ``webhook`` channel."""

    channel = "webhook"

    def __init__(self, settings: Settings, registry: DeviceRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self._key = signing_key(settings.webhook_secret)
        self._session: aiohttp.ClientSession | None = None
        self._resolver: PublicResolver | None = None

    def bind(self, app: faust.App, topics: Topics, settings: Settings) -> None:
        """Declare the registry's tables and agent on ``app`` (the contacts hold the URLs)."""
        self.registry.bind(app, topics, settings.topic_partitions)

    async def targets(self, accepted: NotificationAccepted) -> Sequence[str]:
        """The contact's ``webhook_url``, unless the user has none or turned webhooks off."""
        contact = self.registry.contact(accepted.user_id)
        if contact is None or not contact.get("webhook_url") or self.channel not in contact.get("channels", ()):
            return []
        return [str(contact["webhook_url"])]

    async def send(self, accepted: NotificationAccepted, target: str) -> str | None:
        """POST the notification to ``target``; return its ``webhook-id``."""
        try:
            url = check_url(target, allow_loopback_http=self.settings.webhook_allow_loopback_http)
        except InvalidWebhook as exc:
            raise DeliveryError(f"webhook URL refused: {exc}", retriable=False) from None
        now = time.time()
        body = payload(accepted, now=now)
        msg_id = message_id(accepted.notification_id, url)
        sent_headers = {
            **headers(self._key, msg_id, int(now), body),
            "content-type": "application/json",
            "user-agent": "Herald-Webhook/1",
        }
        timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout_seconds)
        try:
            async with self._client().post(
                url, data=body, headers=sent_headers, allow_redirects=False, timeout=timeout
            ) as answer:
                if 200 <= answer.status < 300:
                    return msg_id
                detail = (await answer.content.read(_DETAIL_BYTES)).decode(errors="replace")
                raise classify(answer.status, " ".join(detail.split()))
        except TimeoutError:
            raise DeliveryError(
                f"no answer within {self.settings.webhook_timeout_seconds:g}s", retriable=True
            ) from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, InternalAddress):
                raise DeliveryError(f"webhook URL refused: {exc.os_error}", retriable=False) from None
            raise DeliveryError(f"HTTP transport: {type(exc).__name__}: {exc}", retriable=True) from None
        except aiohttp.InvalidUrlClientError as exc:
            raise DeliveryError(f"webhook URL refused: {exc}", retriable=False) from None
        except aiohttp.ClientError as exc:
            raise DeliveryError(f"HTTP transport: {type(exc).__name__}: {exc}", retriable=True) from None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if self._resolver is None:
                self._resolver = PublicResolver(allow_loopback=self.settings.webhook_allow_loopback_http)
            connector = aiohttp.TCPConnector(limit=100, limit_per_host=10, resolver=self._resolver)
            self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def close(self) -> None:
        """Close the HTTP connections (idempotent)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        resolver, self._resolver = self._resolver, None
        if resolver is not None:
            await resolver.close()  # a connector does not close a resolver it was given
