"""APNs channel: an aioapns adapter of the ``Sink`` port (``streams.delivery_attempt``).

Targets are the user's active device tokens from the device registry (or the one
token the request names, unless the registry knows it is dead). Each push carries
``apns-priority`` 10 for high notifications and 5 otherwise (always 5 for background
pushes, as Apple requires), the push type, the collapse id and an expiration derived
from ``expires_at``; its ``apns-id`` is derived from the notification and the token, so
a retry is recognisably the same push.

Outcomes: 200 -> the ``apns-id`` is the provider id. 410 or ``BadDeviceToken`` ->
``device.invalidated`` is appended and the token is no longer targeted; the delivery
fails for good. 429, 5xx, an expired provider token, a timeout, a refused or lost
connection (aioapns giving up connecting, a GOAWAY under a send) -> retriable. Other
4xx -> permanent. Payloads over Apple's limit are refused before sending.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
from aioapns import APNs, NotificationRequest, PushType
from aioapns.common import NotificationResult
from aioapns.exceptions import ConnectionClosed, MaxAttemptsExceeded
from h2.exceptions import ProtocolError

from engine.retry import DeliveryError
from engine.settings import ConfigError, Settings
from schemas.channels import IOS
from schemas.envelope import Envelope
from schemas.events import DeviceInvalidated, NotificationAccepted
from schemas.ids import derived_id
from streams.apns_client import PushRequest, close_apns_client, make_apns_client, serialised
from streams.device_registry import ACTIVE, DeviceRegistry
from streams.metrics import APNS_TOKENS_INVALIDATED
from streams.publish import append
from streams.topics import Topics

log = logging.getLogger(__name__)

SOURCE = "herald/apns"
PLATFORM = IOS.name
"""The device platform the ``apns`` channel declares: the sink pushes to the user's devices of it only."""
MAX_PAYLOAD_BYTES = 4096
"""Apple's limit for every push type but VoIP."""
INVALID_TOKEN_REASONS = frozenset({"BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic"})
RETRIABLE_REASONS = frozenset({"ExpiredProviderToken", "TooManyProviderTokenUpdates", "TooManyRequests"})
_RESERVED = "aps"


def payload(accepted: NotificationAccepted) -> dict[str, Any]:
    """The JSON payload: ``aps`` (alert, badge, sound, category, thread) plus the custom data."""
    aps: dict[str, Any]
    if accepted.push_type == "background":
        aps = {"content-available": 1}
    else:
        aps = {"alert": {"title": accepted.title, "body": accepted.body}}
        if accepted.sound:
            aps["sound"] = accepted.sound
        if accepted.category:
            aps["category"] = accepted.category
    if accepted.badge is not None:
        aps["badge"] = accepted.badge
    if accepted.collapse_key:
        aps["thread-id"] = accepted.collapse_key
    custom = {k: v for k, v in accepted.data.items() if k != _RESERVED}
    return {**custom, "aps": aps, "notification_id": accepted.notification_id}


def payload_size(body: dict[str, Any]) -> int:
    """Bytes on the wire, serialised exactly as aioapns does."""
    return len(serialised(body))


def apns_id(notification_id: str, token: str) -> str:
    """The ``apns-id`` of one notification to one device (a UUID, as APNs requires).

    ``derived_id`` is already a canonical UUID string (``str(uuid.uuid5(...))``): no round trip through ``uuid.UUID``.
    """
    return derived_id(notification_id, "apns", token)


def request_for(accepted: NotificationAccepted, token: str, *, now: datetime) -> PushRequest:
    """The aioapns request of ``accepted`` for ``token``; ``DeliveryError`` if it cannot be sent.

    Its payload is serialised once, here: the bytes checked against Apple's limit are the ones sent.
    """
    body = payload(accepted)
    raw = serialised(body)
    size = len(raw)
    if size > MAX_PAYLOAD_BYTES:
        raise DeliveryError(
            f"payload is {size} bytes, over APNs' {MAX_PAYLOAD_BYTES}-byte limit: shorten title, body or data",
            retriable=False,
        )
    background = accepted.push_type == "background"
    ttl = None
    if accepted.expires_at is not None:
        # aioapns sends apns-expiration = now + ttl; 0 means "now or never" to APNs.
        ttl = max(0, int((accepted.expires_at - now).total_seconds()))
    return PushRequest(
        device_token=token,
        message=body,
        body=raw,
        notification_id=apns_id(accepted.notification_id, token),
        time_to_live=ttl,
        priority=10 if accepted.priority == "high" and not background else 5,
        collapse_key=accepted.collapse_key,
        push_type=PushType.BACKGROUND if background else PushType.ALERT,
    )


def classify(result: NotificationResult) -> DeliveryError:
    """A ``DeliveryError`` for an APNs error response."""
    status = int(result.status) if str(result.status).isdigit() else 0
    text = f"APNs {result.status} {result.description}"
    retriable = status == 429 or status >= 500 or result.description in RETRIABLE_REASONS
    return DeliveryError(text, retriable=retriable)


class ApnsSink:
    """Pushes notifications to iOS devices through aioapns; ``Sink`` of the ``apns`` channel."""

    channel = "apns"

    def __init__(self, settings: Settings, registry: DeviceRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.max_in_flight = settings.apns_max_in_flight
        """Pushes awaited at once (the agent's concurrency; one HTTP/2 connection carries them)."""
        self.topics: Topics | None = None
        self._client: APNs | None = None

    def bind(self, app: faust.App, topics: Topics, settings: Settings) -> None:
        """Declare the registry on ``app``; keep the event log to append ``device.invalidated`` to."""
        self.registry.bind(app, topics, settings.topic_partitions, max_devices=settings.max_devices_per_user)
        self.topics = topics

    async def targets(self, accepted: NotificationAccepted) -> Sequence[str]:
        """The named token unless known dead, else every active token of the user."""
        if accepted.device_token:
            token = accepted.device_token.lower()
            state = self.registry.state(accepted.user_id, token, PLATFORM)
            return [token] if state in (None, ACTIVE) else []
        return self.registry.active_tokens(accepted.user_id, PLATFORM)

    async def send(self, accepted: NotificationAccepted, target: str) -> str | None:
        """Push to one device; return the ``apns-id``."""
        request = request_for(accepted, target, now=datetime.now(UTC))
        client = self._connect()
        try:
            async with asyncio.timeout(self.settings.apns_timeout_seconds):  # no task per push, unlike wait_for
                result = await client.send_notification(request)
        except TimeoutError:
            # aioapns leaves the stream's state behind when a send is cancelled: start afresh.
            self._reset(client)
            limit = self.settings.apns_timeout_seconds
            raise DeliveryError(f"APNs: no answer within {limit:g}s", retriable=True) from None
        except asyncio.CancelledError:
            self._reset(client)
            raise
        except (ConnectionError, ConnectionClosed, MaxAttemptsExceeded, ProtocolError) as exc:
            # Transport trouble, not the push's: aioapns gives up connecting after a few tries
            # (MaxAttemptsExceeded), or the server closed the connection under this send
            # (ProtocolError after a GOAWAY as it shuts down).
            self._reset(client)
            raise DeliveryError(f"APNs connection: {type(exc).__name__}: {exc}", retriable=True) from exc
        if result.is_successful:
            return str(result.notification_id)
        if result.description in INVALID_TOKEN_REASONS or str(result.status) == "410":
            await self._invalidate(accepted, target, result)
            raise DeliveryError(f"APNs {result.status} {result.description}: device token invalidated", retriable=False)
        raise classify(result)

    async def _invalidate(self, accepted: NotificationAccepted, token: str, result: NotificationResult) -> None:
        since = datetime.fromtimestamp(result.timestamp / 1000, UTC) if result.timestamp else datetime.now(UTC)
        reason = str(result.description or result.status)
        self.registry.mark_invalid(accepted.user_id, token, reason, since, PLATFORM)
        event = DeviceInvalidated(
            user_id=accepted.user_id, device_token=token, reason=reason, platform=PLATFORM, invalid_since=since
        )
        env = Envelope(
            id=derived_id(accepted.notification_id, event.TYPE, token),
            source=SOURCE,
            time=datetime.now(UTC),
            data=event,
            subject=None,
            userid=accepted.user_id,
            correlationid=accepted.notification_id,  # herald why finds it by the notification id
        )
        APNS_TOKENS_INVALIDATED.labels(reason if reason in INVALID_TOKEN_REASONS else "other").inc()
        if self.topics is None:
            log.error("APNs sink not bound: device.invalidated not recorded", extra={"user_id": accepted.user_id})
            return
        await append(self.topics.events, [env])
        log.info("device token invalidated", extra={"user_id": accepted.user_id, "reason": reason})

    def _connect(self) -> APNs:
        if self._client is None:
            self._client = create_client(self.settings)
            self._client.err_func = _quiet
        return self._client

    def _reset(self, client: APNs | None) -> None:
        """Drop ``client`` (a send through it failed) unless a newer one replaced it already.

        Many pushes are in flight on one client: when APNs stalls they all time out together,
        and the first one's reset must not be repeated on the fresh client the others' retries use.
        """
        if client is None or client is not self._client:
            return
        self._client = None
        close_apns_client(client)

    async def close(self) -> None:
        """Close the connections to APNs."""
        self._reset(self._client)


async def _quiet(request: NotificationRequest, result: NotificationResult) -> None:
    # aioapns logs every non-200 at ERROR; the sink records the outcome as events instead.
    log.debug("APNs refused a push", extra={"status": result.status, "reason": result.description})


def create_client(settings: Settings) -> APNs:
    """An aioapns client from ``settings`` (must run inside the event loop)."""
    if settings.apns_sandbox is None and not settings.apns_server:
        raise ConfigError("HERALD_APNS_SANDBOX is required with an APNs key (true: sandbox, false: production)")
    key = settings.apns_key or Path(settings.apns_key_path).read_text()
    server = None
    if settings.apns_server:
        host, _, port = settings.apns_server.rpartition(":")
        server = (host, int(port))
    client = make_apns_client(
        key_pem=key,
        key_id=settings.apns_key_id,
        team_id=settings.apns_team_id,
        topic=settings.apns_topic,
        use_sandbox=bool(settings.apns_sandbox),
        server=server,
        ca_path=settings.apns_ca_path or None,
    )
    client.pool.max_connections = settings.apns_max_connections
    return client
