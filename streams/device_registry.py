"""Device registry: per-user device tokens (of every platform) and contact details, as Faust tables.

Built by one agent on the event log from ``device.registered``, ``device.unregistered``,
``device.invalidated`` and ``contact.updated``. The log and the delivery topics are keyed
by user id with the same partition count, so a worker that holds a user's delivery
partition holds the table partitions with the user's devices: the sinks resolve
user -> active tokens (and user -> email address) in memory, without a database.

Two tables, so that no record grows with what a user does (a Kafka record, and so a
changelog entry, must stay under the producer's 1 MB limit):

- ``herald-device-tokens``: one entry per (user, device) with its state;
- ``herald-device-index``: per user, the active devices, oldest registration first, at
  most ``max_devices`` of them, whatever their platform. A registration beyond the cap turns the oldest off and
  appends ``device.unregistered`` for it (the API does the same before it registers, so
  this only happens when two registrations race), which the read model applies too.

Contacts: ``herald-contacts`` keeps each user's latest ``contact.updated`` (address,
channels, email fallback delay), one small entry per user whatever the user does. The
email sink reads the address; ingest's routing reads the preferences
(``preferences``), so a worker always binds a registry, with or without sinks.

Lifecycle: every device event is folded by ``engine.device_lifecycle.evolve``, the same
fold as the ``devices`` read model's, on the (user, device) entry of the event's user, and
the cap by ``engine.device_lifecycle.admit``; so the sinks push to exactly the tokens
REST shows as active (revival after an invalidation included: a ``device.registered``
later than APNs' ``invalid_since`` turns the token back on).

Devices: a device is (platform, token), the platform one a channel of the registry
declares (``schemas.channels``). Keys are ``engine.device_lifecycle.device_key``: an ios
device's key is its bare token, as every key was before platforms existed, so the
changelogs of an earlier release keep their meaning. A channel's sink asks only for the
devices of its own platform (``active_tokens(user, platform)``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust

from engine import device_lifecycle as lifecycle
from engine.device_lifecycle import ACTIVE as ACTIVE
from engine.device_lifecycle import INVALID as INVALID
from engine.device_lifecycle import UNREGISTERED as UNREGISTERED
from engine.device_lifecycle import device_key, key_of, split_key
from engine.routing import ContactPreferences
from schemas.channels import DEFAULT_PLATFORM
from schemas.codec import decode, format_time, parse_time
from schemas.envelope import Envelope
from schemas.errors import InvalidMessage
from schemas.events import ContactUpdated, DeviceInvalidated, DeviceRegistered, DeviceUnregistered
from schemas.ids import derived_id
from streams.dead_letters import header_items
from streams.publish import append
from streams.topics import Topics

log = logging.getLogger(__name__)

SOURCE = "herald/devices"
CONTACTS_TABLE = "herald-contacts"
"""The contacts table's name; its changelog topic is ``<app id>-herald-contacts-changelog`` (Faust's naming)."""
CONTACTS_AGENT = "herald.contacts"
"""The agent of a worker without sinks that folds the sink group's contacts (``ContactsOnly``)."""
DEFAULT_MAX_DEVICES = 20
"""Active tokens per user until a sink binds the registry with the configured cap (the settings' default)."""


@dataclass(frozen=True, slots=True)
class Device:
    """One of a user's device tokens as the registry knows it."""

    token: str
    """The device token (APNs: 64 lower-case hex characters)."""
    state: str
    """``active``, ``unregistered`` or ``invalid``."""
    registered_at: datetime
    """When the token was last registered."""
    invalidated_at: datetime | None = None
    """When APNs said the token was invalid (or it was unregistered), if it did."""
    reason: str | None = None
    """Why it is not active."""
    platform: str = DEFAULT_PLATFORM
    """The device's platform (``ios`` for APNs)."""


def entry_key(user_id: str, key: str) -> str:
    """Key of one (user, device) entry; ``key`` is a ``device_key`` (an ios token is its own key)."""
    return f"{user_id}\x1f{key}"


def to_entry(device: lifecycle.Device) -> dict[str, Any]:
    """The table entry of a registration (``owner`` is in the key)."""
    return {
        "state": device.status,
        "registered_at": format_time(device.registered_at),
        "updated_at": format_time(device.updated_at),
        "invalidated_at": None if device.active else format_time(device.updated_at),
        "reason": device.reason,
    }


def from_entry(user_id: str, entry: dict[str, Any]) -> lifecycle.Device:
    """The registration of a table entry (entries written before ``updated_at`` existed included)."""
    registered_at = parse_time(entry["registered_at"])
    changed = entry.get("updated_at") or entry.get("invalidated_at")
    return lifecycle.Device(
        user_id,
        str(entry["state"]),
        registered_at,
        parse_time(changed) if changed else registered_at,
        entry.get("reason"),
    )


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

    def __init__(self, max_devices: int = DEFAULT_MAX_DEVICES) -> None:
        self.max_devices = max_devices
        self.tokens: Any = None
        self.index: Any = None
        self.contacts: Any = None
        self.topics: Topics | None = None
        self._app: faust.App | None = None

    def bind(self, app: faust.App, topics: Topics, partitions: int, *, max_devices: int | None = None) -> None:
        """Declare the tables and the agent on ``app`` (once, however many sinks share this registry)."""
        if max_devices is not None:
            self.max_devices = max_devices
        if self._app is app:
            return
        self._app, self.topics = app, topics
        self.tokens = app.Table(
            "herald-device-tokens",
            default=None,
            partitions=partitions,
            key_type=str,
            help="user id + device token -> state",
        )
        self.index = app.Table(
            "herald-device-index",
            default=None,
            partitions=partitions,
            key_type=str,
            help="user id -> active device tokens, oldest first (at most max_devices)",
        )
        self.contacts = app.Table(
            CONTACTS_TABLE,
            default=None,
            partitions=partitions,
            help="user id -> latest contact.updated (email, channels, email_fallback_minutes, webhook_url)",
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
                evicted = self.apply(env)
                if evicted:
                    await append(topics.events, evicted)

        app.agent(topics.events, name="herald.device-registry")(registry)

    def apply(self, env: Envelope) -> list[Envelope]:
        """Fold one event of the log into the tables (called in the agent's partition context).

        Returns the ``device.unregistered`` events of tokens this registration pushed over
        the per-user cap, for the caller to append to the log.
        """
        event = env.data
        if isinstance(event, DeviceRegistered):
            return self._register(env, event)
        if isinstance(event, DeviceUnregistered | DeviceInvalidated):
            self._fold(event, env.time)
        elif isinstance(event, ContactUpdated):
            self.contacts[event.user_id] = {
                "email": event.email,
                "channels": list(event.channels),
                "email_fallback_minutes": event.email_fallback_minutes,
                "webhook_url": event.webhook_url,
                "updated_at": format_time(env.time),
            }
        return []

    def _register(self, env: Envelope, event: DeviceRegistered) -> list[Envelope]:
        user, key = event.user_id, key_of(event)
        self._fold(event, env.time)
        active, dropped = lifecycle.admit(self.active_tokens_in_order(user), key, cap=self.max_devices)
        self.index[user] = active
        out = []
        for old in dropped:
            platform, token = split_key(old)
            gone = DeviceUnregistered(user_id=user, device_token=token, platform=platform)
            self._fold(gone, env.time)  # what the read model does when it reads the event below
            out.append(
                Envelope(
                    id=derived_id(env.id, gone.TYPE, old),  # an ios key is its token: ids as before
                    source=SOURCE,
                    time=env.time,
                    data=gone,
                    subject=None,
                    userid=user,
                    correlationid=env.id,
                )
            )
            log.info("device limit reached: oldest token unregistered", extra={"user_id": user})
        return out

    def _fold(self, event: lifecycle.DeviceEvent, at: datetime) -> None:
        """Apply the shared lifecycle fold to the (user, device) entry of ``event``; keep the index in step."""
        user_id, key = event.user_id, key_of(event)
        table_key = entry_key(user_id, key)
        raw = self.tokens.get(table_key)
        before = from_entry(user_id, dict(raw)) if raw else None
        after = lifecycle.evolve(before, event, at)
        if after is None or after is before:
            return
        self.tokens[table_key] = to_entry(after)
        if not after.active:
            active = self.active_tokens_in_order(user_id)
            if key in active:
                self.index[user_id] = [k for k in active if k != key]

    def user_devices(self, user_id: str, platform: str | None = None) -> list[Device]:
        """The user's active devices (of ``platform`` only, when given), with their state."""
        out = []
        for key in sorted(self.active_tokens_in_order(user_id)):
            device_platform, token = split_key(key)
            if platform is not None and device_platform != platform:
                continue
            entry = self._entry(user_id, key)
            if entry is not None:
                out.append(
                    Device(
                        token,
                        entry["state"],
                        parse_time(entry["registered_at"]),
                        parse_time(entry["invalidated_at"]) if entry.get("invalidated_at") else None,
                        entry.get("reason"),
                        device_platform,
                    )
                )
        return out

    def active_tokens_in_order(self, user_id: str) -> list[str]:
        """The user's active devices (``device_key``: an ios token is its own key), oldest registration first."""
        raw = self.index.get(user_id) if self.index is not None else None
        return [str(t) for t in raw or ()]

    def active_tokens(self, user_id: str, platform: str = DEFAULT_PLATFORM) -> list[str]:
        """The tokens of ``platform`` a push for ``user_id`` goes to (a channel's sink asks for its own)."""
        return [d.token for d in self.user_devices(user_id, platform) if d.state == ACTIVE]

    def state(self, user_id: str, token: str, platform: str = DEFAULT_PLATFORM) -> str | None:
        """State of one device of the user, ``None`` if the registry has not seen it."""
        entry = self._entry(user_id, device_key(platform, token))
        return None if entry is None else str(entry["state"])

    def _entry(self, user_id: str, key: str) -> dict[str, Any] | None:
        raw = self.tokens.get(entry_key(user_id, key)) if self.tokens is not None else None
        return dict(raw) if raw else None

    def mark_invalid(
        self, user_id: str, token: str, reason: str, since: datetime | None = None, platform: str = DEFAULT_PLATFORM
    ) -> None:
        """Stop targeting the device now (the sink calls this in its own, co-partitioned, agent context).

        The ``device.invalidated`` event the sink appends makes the same change through the
        agent; doing it here too means the very next delivery already skips the token.
        """
        at = since or datetime.now(UTC)
        gone = DeviceInvalidated(
            user_id=user_id, device_token=token, reason=reason, platform=platform, invalid_since=at
        )
        self._fold(gone, at)

    def contact(self, user_id: str) -> dict[str, Any] | None:
        """The user's latest ``contact.updated`` (``email``, ``channels``, ``email_fallback_minutes``), if any."""
        contacts = self.contacts
        if contacts is None:
            return None
        # Most users have no contact: a membership test spares the Faust table the KeyError of a miss
        # (``Mapping.get`` raises and catches one per call).
        raw = contacts[user_id] if user_id in contacts else None  # noqa: SIM401
        return dict(raw) if raw else None

    def preferences(self, user_id: str) -> ContactPreferences | None:
        """The routing preferences of the user's latest contact, ``None`` if the user has none."""
        contact = self.contact(user_id)
        if contact is None:
            return None
        minutes = contact.get("email_fallback_minutes")
        return ContactPreferences(frozenset(contact.get("channels", ())), minutes if isinstance(minutes, int) else None)


def contacts_changelog(sink_app_id: str) -> str:
    """The changelog topic of the contacts table of the worker group whose app id is ``sink_app_id``."""
    return f"{sink_app_id}-{CONTACTS_TABLE}-changelog"


class ContactsOnly(DeviceRegistry):
    """The registry of a worker without sinks: each user's latest contact, for routing, and nothing else.

    It does not read the event log. The sink group's registry (``DeviceRegistry``, in the worker
    that ingests ``low``) folds ``contact.updated`` from the log into its ``herald-contacts`` table;
    that table's changelog topic (``source``: ``contacts_changelog``) holds each user's latest
    contact and nothing else, keyed by user id and partitioned as the log and the request topics
    are. This registry's agent copies it, entry by entry, into a table of its own (restored from
    its own changelog at a restart; deleted entries deleted). So the worker's consumer never
    fetches the log, whose partitions take two to three events per notification of every
    priority: under a low backlog each fetch that carried them held up the high requests'
    records (issue 9, target 6, ``docs/benchmarks.md``). A contact change reaches this worker once
    the sink group has folded it. It never appends device events (the sink group's registry
    alone does that) and declares no device table.
    """

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source

    def bind(self, app: faust.App, topics: Topics, partitions: int, *, max_devices: int | None = None) -> None:
        if self._app is app:
            return
        self._app, self.topics = app, topics
        self.contacts = app.Table(
            CONTACTS_TABLE,
            default=None,
            partitions=partitions,
            help="user id -> latest contact, copied from the sink group's contacts (routing preferences)",
        )
        # As Faust declares a table's changelog (compacted, internal: created if missing), so
        # whichever group starts first creates it with the same configuration.
        source = app.topic(
            self.source,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions,
            compacting=True,
            internal=True,
        )

        async def contacts(stream: faust.StreamT[bytes]) -> None:
            async for event in stream.events():
                self.copy(event.message.key, event.message.value)

        app.agent(source, name=CONTACTS_AGENT)(contacts)

    def copy(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one entry of the sink group's contacts changelog (in the agent's partition context)."""
        try:
            user_id = json.loads(key) if key else None  # Faust's default key serializer (json)
        except ValueError:
            user_id = None
        if not isinstance(user_id, str):
            log.warning("contact entry without a user id key: skipped", extra={"topic": self.source})
            return
        if value is None:  # a deleted entry (a tombstone)
            if user_id in self.contacts:
                del self.contacts[user_id]
            return
        try:
            contact = json.loads(value)
        except ValueError:
            contact = None
        if not isinstance(contact, dict):
            log.warning("contact entry not a JSON object: skipped", extra={"user_id": user_id, "topic": self.source})
            return
        self.contacts[user_id] = contact
