"""Schema versions on the wire, upcasting old records, and the channel check.

An event's ``data`` follows ``schemas/<type>/v<N>.json``. Version 1 records carry no
version at all (nothing wrote the CloudEvents ``dataschema`` attribute before version
2), and the event log keeps them forever, so a record without ``dataschema`` (or with
one that names no Herald schema) is read as version 1. Herald writes each event in the
oldest version that carries it (``write_version``): version 1, without ``dataschema``
and byte for byte as before, while its channels are ones version 1 knew (so a worker of
the previous release still reads it during a rolling upgrade, and records grow by
nothing), ``dataschema: herald:<type>:v2`` once it names a channel added since. An
older record is validated against its own version's schema, then upcast step by step
(``UPCASTERS``) to the version of its class, so the rest of Herald only ever sees the
current shape.

Version 2 of the eleven types that name channels replaced the channel enum with a
string checked against the channel registry (``schemas.channels``) here, at decode
time: adding a channel no longer edits a schema. Every v1 channel enum value is a
registry channel, so their v1 -> v2 upcast keeps the data as it is; the registry
check runs on the upcast data, whatever the version read.

Version 2 of the three device types made devices generic: a device is (platform,
token), the platform one a channel of the registry declares (``schemas.channels``) and
the token checked by that platform's rule, here at decode time. Version 1 knew only
APNs tokens: its records are upcast with ``platform: ios``, and an ios device event is
still written as version 1 (``device.unregistered`` and ``device.invalidated`` without
the ``platform`` field v1 did not have), so the previous release reads it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from schemas import channels
from schemas.channels import DEFAULT_PLATFORM, REGISTRY
from schemas.errors import InvalidMessage
from schemas.events import EVENT_TYPES

ALL = "all"
"""The request channel that stands for every channel of ``all`` (``schemas.channels``)."""

_DATASCHEMA = re.compile(r"^herald:(?P<type>[a-z_.]{1,64}):v(?P<version>[0-9]{1,3})$")

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def _same_data(data: dict[str, Any]) -> dict[str, Any]:
    """v1 -> v2 of the channel-naming types: v2 only widened the channel enum to a string."""
    return data


CHANNEL_TYPES_V2 = (
    "contact.updated",
    "delivery.abandoned",
    "delivery.cancelled",
    "delivery.deferred",
    "delivery.failed",
    "delivery.requeued",
    "delivery.retry_scheduled",
    "delivery.succeeded",
    "notification.accepted",
    "notification.expired",
    "notification.requested",
)
"""The types whose version 2 takes channels as registry-checked strings."""

DEVICE_TYPES_V2 = ("device.registered", "device.unregistered", "device.invalidated")
"""The types whose version 2 names the device's platform (any registry platform)."""


def _ios_platform(data: dict[str, Any]) -> dict[str, Any]:
    """v1 -> v2 of the device types: a v1 device is an APNs one."""
    return {**data, "platform": data.get("platform", DEFAULT_PLATFORM)}


def _drop_ios_platform(data: dict[str, Any]) -> dict[str, Any]:
    """v2 -> v1 of ``device.unregistered``/``device.invalidated`` (ios only): v1 has no ``platform``."""
    return {k: v for k, v in data.items() if k != "platform"}


UPCASTERS: dict[tuple[str, int], Upcaster] = {
    **{(t, 1): _same_data for t in CHANNEL_TYPES_V2},
    **{(t, 1): _ios_platform for t in DEVICE_TYPES_V2},
}
"""``(type, version)`` -> the function turning that version's data into the next version's."""

DOWNCASTERS: dict[tuple[str, int], Upcaster] = {
    ("device.unregistered", 2): _drop_ios_platform,
    ("device.invalidated", 2): _drop_ios_platform,
}
"""``(type, version)`` -> the function writing that version's data as the previous version
(only where ``write_version`` picks the older one and its shape differs)."""

_V1_CHANNELS = frozenset({"websocket", "email", "apns", "webhook"})
V1_CHANNELS: dict[str, frozenset[str]] = {
    **dict.fromkeys(CHANNEL_TYPES_V2, _V1_CHANNELS),
    "notification.requested": _V1_CHANNELS | {"all"},
    "delivery.requeued": _V1_CHANNELS - {"websocket"},
}
"""The channel enum of each type's v1 schema (frozen with it; a unit test compares them)."""

CHANNEL_FIELDS: dict[str, str] = {
    "contact.updated": "channels",
    "delivery.abandoned": "channel",
    "delivery.cancelled": "channel",
    "delivery.deferred": "channel",
    "delivery.failed": "channel",
    "delivery.requeued": "channel",
    "delivery.retry_scheduled": "channel",
    "delivery.succeeded": "channel",
    "notification.accepted": "channels",
    "notification.expired": "channel",
    "notification.requested": "channels",
}
"""The field naming a channel (``channel``) or channels (``channels``) in each type's current version."""


def current_version(event_type: str) -> int:
    """The version of ``event_type``'s class (the shape Herald writes and works with)."""
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise InvalidMessage(f"unknown event type {event_type!r}")
    return cls.VERSION


def dataschema(event_type: str, version: int) -> str:
    """The ``dataschema`` attribute naming ``schemas/<type>/v<version>.json`` (its ``$id``)."""
    return f"herald:{event_type}:v{version}"


def version_of(event_type: str, attribute: object) -> int:
    """The schema version a record's ``dataschema`` attribute names; 1 when it names none.

    ``InvalidMessage`` for a Herald schema of another type or of a version this code
    does not know (a record written by a newer release).
    """
    if not isinstance(attribute, str):
        return 1
    match = _DATASCHEMA.match(attribute)
    if match is None:
        return 1  # a producer's own URI: never read before version 2, so still version 1
    if match["type"] != event_type:
        raise InvalidMessage(f"dataschema {attribute!r} names another type than {event_type!r}")
    version = int(match["version"])
    current = current_version(event_type)
    if not 1 <= version <= current:
        raise InvalidMessage(
            f"dataschema {attribute!r}: {event_type} has versions 1 to {current}; a newer Herald wrote this record"
        )
    return version


def write_version(event_type: str, data: dict[str, Any]) -> int:
    """The version to write ``data`` (current shape) in: the oldest that carries it."""
    current = current_version(event_type)
    if event_type in DEVICE_TYPES_V2 and current == 2:
        return 1 if data.get("platform", DEFAULT_PLATFORM) == DEFAULT_PLATFORM else 2
    v1 = V1_CHANNELS.get(event_type)
    if v1 is None or current != 2:  # a later version of a channel type must say how to write it
        return current
    value = data.get(CHANNEL_FIELDS[event_type])
    if value is None:
        return 1
    fits = value in v1 if isinstance(value, str) else v1.issuperset(value)
    return 1 if fits else 2


def downcast(event_type: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (current shape) as ``version`` writes it (``write_version`` chose it: it carries the data)."""
    current = current_version(event_type)
    while current > version:
        step = DOWNCASTERS.get((event_type, current))
        data = data if step is None else step(data)
        current -= 1
    return data


def upcast(event_type: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` of ``version`` (already valid for it) brought to the current version."""
    current = current_version(event_type)
    while version < current:
        data = UPCASTERS[(event_type, version)](data)
        version += 1
    return data


def allowed_channels(event_type: str) -> tuple[str, ...]:
    """The channel names ``event_type`` may carry, from the registry as it is now."""
    registry = REGISTRY
    known = _ALLOWED.get(event_type)
    if known is not None and known[0] is registry:
        return known[1]
    if event_type == "notification.requested":
        allowed = (*registry.names, ALL)
    elif event_type == "delivery.requeued":
        allowed = registry.handed_off
    else:
        allowed = registry.names
    _ALLOWED[event_type] = (registry, allowed)
    return allowed


_ALLOWED: dict[str, tuple[object, tuple[str, ...]]] = {}
"""Per event type: the registry its allowed channels were worked out from, and them (a
registry is immutable; another one, e.g. a test's, is worked out again on first use)."""


def check_channels(event_type: str, data: dict[str, Any]) -> None:
    """``InvalidMessage`` naming the first channel of ``data`` the registry does not have."""
    name = CHANNEL_FIELDS.get(event_type)
    if name is None or data.get(name) is None:
        return
    value = data[name]
    named = value if isinstance(value, list | tuple) else [value]
    allowed = allowed_channels(event_type)
    for channel in named:
        if channel not in allowed:
            raise InvalidMessage(
                f"{event_type}: unknown channel {str(channel)[:64]!r} in {name} (known: {', '.join(allowed)})"
            )


def check_device(event_type: str, data: dict[str, Any]) -> None:
    """``InvalidMessage`` unless a device event's platform is a registry platform and, for a
    registration, its token follows that platform's rule (``schemas.channels``)."""
    if event_type not in DEVICE_TYPES_V2:
        return
    platform = data.get("platform", DEFAULT_PLATFORM)
    known = channels.platforms()
    declared = known.get(platform)
    if declared is None:
        raise InvalidMessage(
            f"{event_type}: unknown device platform {str(platform)[:64]!r} (known: {', '.join(known)})"
        )
    if event_type == "device.registered" and declared.canonical(data.get("device_token")) is None:
        raise InvalidMessage(f"{event_type}: device_token of platform {platform}: {declared.token_hint}")
