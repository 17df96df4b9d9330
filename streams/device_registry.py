"""Device registry: per-user APNs device tokens and contact details, as Faust tables.

Built by one agent on the event log from ``device.registered``, ``device.unregistered``,
``device.invalidated`` and ``contact.updated``. The log and the delivery topics are keyed
by user id with the same partition count, so a worker that holds a user's delivery
partition holds the table partition with the user's devices: the sinks resolve
user -> active tokens (and user -> email address) in memory, without a database.

Revival rule: ``device.invalidated`` (APNs 410 / BadDeviceToken) turns a token off only
if it was registered before the invalidation (APNs' ``invalid_since`` when given, else
the event time); a ``device.registered`` that comes later turns it back on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust

from schemas.codec import decode, format_time, parse_time
from schemas.envelope import Envelope
from schemas.errors import InvalidMessage
from schemas.events import ContactUpdated, DeviceInvalidated, DeviceRegistered, DeviceUnregistered
from streams.ingest import header_items
from streams.topics import Topics

log = logging.getLogger(__name__)

ACTIVE, UNREGISTERED, INVALID = "active", "unregistered", "invalid"


@dataclass(frozen=True, slots=True)
class Device:
    """One of a user's device tokens as the registry knows it."""

    token: str
    """The APNs device token (64 lower-case hex characters)."""
    state: str
    """``active``, ``unregistered`` or ``invalid``."""
    registered_at: datetime
    """When the token was last registered."""
    invalidated_at: datetime | None = None
    """When APNs said the token was invalid (or it was unregistered), if it did."""
    reason: str | None = None
    """Why it is not active."""


def apply(devices: dict[str, Any], env: Envelope) -> dict[str, Any]:
    """The user's device map (JSON-able, as stored in the table) after ``env``."""
    event = env.data
    out = dict(devices)
    if isinstance(event, DeviceRegistered):
        out[event.device_token] = {"state": ACTIVE, "registered_at": format_time(env.time)}
    elif isinstance(event, DeviceUnregistered) and event.device_token in out:
        out[event.device_token] = {
            **out[event.device_token],
            "state": UNREGISTERED,
            "invalidated_at": format_time(env.time),
            "reason": "unregistered",
        }
    elif isinstance(event, DeviceInvalidated) and event.device_token in out:
        out[event.device_token] = invalidated(out[event.device_token], event.invalid_since or env.time, event.reason)
    return out


def invalidated(entry: dict[str, Any], since: datetime, reason: str) -> dict[str, Any]:
    """``entry`` turned off by an invalidation at ``since``, unless it was registered after that."""
    if parse_time(entry["registered_at"]) > since:
        return entry  # re-registered after APNs saw the token die: the new registration wins
    return {**entry, "state": INVALID, "invalidated_at": format_time(since), "reason": reason}


def _maybe_relevant(value: bytes | None, headers: list[tuple[str, bytes]]) -> bool:
    """False only for records that certainly are not device or contact events."""
    if not value:
        return False
    for key, raw in headers:
        if key == "ce_type":
            return raw.startswith((b"device.", b"contact."))
    return b'"device.' in value or b'"contact.updated"' in value


class DeviceRegistry:
    """The tables and the agent that builds them; shared by the email and APNs sinks."""

    def __init__(self) -> None:
        self.devices: Any = None
        self.contacts: Any = None
        self.topics: Topics | None = None
        self._app: faust.App | None = None

    def bind(self, app: faust.App, topics: Topics, partitions: int) -> None:
        """Declare the tables and the agent on ``app`` (once, however many sinks share this registry)."""
        if self._app is app:
            return
        self._app, self.topics = app, topics
        self.devices = app.Table(
            "herald-devices", default=None, partitions=partitions, help="user id -> {device token: state}"
        )
        self.contacts = app.Table(
            "herald-contacts", default=None, partitions=partitions, help="user id -> latest contact.updated"
        )

        async def registry(stream: faust.StreamT[bytes]) -> None:
            async for event in stream.events():
                message = event.message
                headers = header_items(message.headers)
                if not _maybe_relevant(message.value, headers):
                    continue  # cheap pre-filter: most of the log is about notifications
                try:
                    env = decode(message.value, headers)
                except InvalidMessage:
                    continue  # the router dead-letters undecodable log records; one report is enough
                self.apply(env)

        app.agent(topics.events, name="herald.device-registry")(registry)

    def apply(self, env: Envelope) -> None:
        """Fold one event of the log into the tables (called in the agent's partition context)."""
        event = env.data
        if isinstance(event, DeviceRegistered | DeviceUnregistered | DeviceInvalidated):
            self.devices[event.user_id] = apply(self.devices.get(event.user_id) or {}, env)
        elif isinstance(event, ContactUpdated):
            self.contacts[event.user_id] = {
                "email": event.email,
                "channels": list(event.channels),
                "updated_at": format_time(env.time),
            }

    def user_devices(self, user_id: str) -> list[Device]:
        """Every token the user ever registered, with its state."""
        raw = self.devices.get(user_id) if self.devices is not None else None
        return [
            Device(
                token,
                entry["state"],
                parse_time(entry["registered_at"]),
                parse_time(entry["invalidated_at"]) if entry.get("invalidated_at") else None,
                entry.get("reason"),
            )
            for token, entry in sorted((raw or {}).items())
        ]

    def active_tokens(self, user_id: str) -> list[str]:
        """The tokens a push for ``user_id`` goes to."""
        return [d.token for d in self.user_devices(user_id) if d.state == ACTIVE]

    def state(self, user_id: str, token: str) -> str | None:
        """State of one token of the user, ``None`` if the registry has not seen it."""
        raw = self.devices.get(user_id) if self.devices is not None else None
        entry = (raw or {}).get(token)
        return None if entry is None else str(entry["state"])

    def mark_invalid(self, user_id: str, token: str, reason: str, since: datetime | None = None) -> None:
        """Stop targeting ``token`` now (the sink calls this in its own, co-partitioned, agent context).

        The ``device.invalidated`` event the sink appends makes the same change through the
        agent; doing it here too means the very next delivery already skips the token.
        """
        devices = self.devices.get(user_id) or {}
        if token in devices:
            changed = {**devices, token: invalidated(devices[token], since or datetime.now(UTC), reason)}
            self.devices[user_id] = changed

    def contact(self, user_id: str) -> dict[str, Any] | None:
        """The user's latest ``contact.updated`` (``email``, ``channels``), if any."""
        raw = self.contacts.get(user_id) if self.contacts is not None else None
        return dict(raw) if raw else None
