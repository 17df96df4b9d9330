"""The channel registry's pure half: what each delivery channel is, declared once.

Adding a channel used to mean editing an enum, an if-chain of sinks, routing's
websocket->email fallback, a bit table derived from the enum's order (reorder the
enum and every stored ``channel_mask`` silently meant other channels) and the channel
enums of eleven event schemas. Each channel is now one ``ChannelSpec``: its name, an
explicit storage ``bit`` that never changes (the position of its bit in
``notifications.channel_mask``), its ``HERALD_*`` settings section, the kind of target
it sends to and, for a fallback channel, the channel it waits on; a channel that sends to
device tokens also declares its device ``platform`` (APNs: ``ios``) and that platform's
token rule, so a new device channel (FCM's ``android``, web push's ``web``) brings its
platform in its own declaration and devices need no new model. ``ALL_CHANNELS``,
``CHANNEL_BITS`` and the fallback chain are derived from ``CHANNELS`` sorted by bit, so
the order of the declarations below changes nothing. The declarations live in
``schemas/`` because a channel name is part of the event contract: the codec checks
every event's channel against this registry (``schemas.codec``), and ``schemas/``
may import nothing outward. ``engine.channels`` is the engine's name for the same
objects; the I/O half (sink factories, dev stand-ins) is ``streams.channel_registry``
and ``herald.dev_channels``, keyed by the same names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

TargetKind = Literal["connection", "address", "device_token", "url"]
"""What a channel sends to: a user's open WebSocket connections, an email address, a
device token, or an HTTPS URL."""

MAX_BIT = 62
"""Highest storage bit: ``channel_mask`` is a signed 64-bit integer."""


TOKEN_MAX = 200
"""Longest device token of any platform (``devices.device_token`` is ``String(200)``)."""
PLATFORM_MAX = 20
"""Longest platform name (``devices.platform`` is ``String(20)``)."""
DEFAULT_PLATFORM = "ios"
"""The platform of a device event or registration that names none: every device before
platforms were generic was an APNs (iOS) one, and version 1 device events say nothing else."""
_TOKEN_CHARS = re.compile(r"^[\x21-\x7e]+$")
"""What every platform's tokens are made of: visible ASCII (no space, no control character)."""


@dataclass(frozen=True, slots=True)
class DevicePlatform:
    """A device platform and its token rule, declared by the channel that pushes to it."""

    name: str
    """Platform name on the wire (``device.registered``'s ``platform``, REST's ``platform``)."""
    token_pattern: str
    """Regular expression a token must match in full (on top of 1 to ``TOKEN_MAX`` visible ASCII)."""
    token_hint: str
    """The rule in words, for error messages (``64 hexadecimal characters``)."""
    lower_case: bool = False
    """Whether tokens are case-insensitive and stored lower-case (APNs' hex tokens)."""
    _compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", re.compile(self.token_pattern))

    def canonical(self, token: object) -> str | None:
        """``token`` as stored (lower-case where the platform says so), ``None`` unless it is valid."""
        if not isinstance(token, str) or not 1 <= len(token) <= TOKEN_MAX or not _TOKEN_CHARS.match(token):
            return None
        if self._compiled.fullmatch(token) is None:
            return None
        return token.lower() if self.lower_case else token


IOS = DevicePlatform("ios", r"[0-9a-fA-F]{64}", "64 hexadecimal characters", lower_case=True)
"""APNs device tokens: 32 bytes in hex."""


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """One delivery channel, as the rest of Herald sees it."""

    name: str
    """Name on the wire (requests, events, topics: ``herald.deliveries.<name>``)."""
    bit: int
    """Storage id: bit ``1 << bit`` in ``notifications.channel_mask``. Never change or reuse one."""
    target: TargetKind
    """What one delivery target of this channel is."""
    settings_prefix: str
    """Its ``Settings`` section: fields ``<prefix>*`` (``HERALD_<PREFIX>*``); empty for none."""
    in_all: bool = True
    """Whether a request for ``all`` channels includes it. False for channels added after
    ``all`` was defined (webhook): a request for ``all`` keeps meaning what it meant, and a
    deployment without the channel's sink does not leave it pending on every notification."""
    fallback_after: str | None = None
    """When a request names this channel and ``fallback_after`` too, this one waits for the
    fallback delay and goes only if the notification is still unread (email after websocket)."""
    platform: DevicePlatform | None = None
    """The device platform this channel pushes to (``device_token`` channels only, one each)."""


WEBSOCKET = ChannelSpec("websocket", bit=0, target="connection", settings_prefix="ws_")
EMAIL = ChannelSpec("email", bit=1, target="address", settings_prefix="smtp_", fallback_after="websocket")
APNS = ChannelSpec("apns", bit=2, target="device_token", settings_prefix="apns_", platform=IOS)
WEBHOOK = ChannelSpec("webhook", bit=3, target="url", settings_prefix="webhook_", in_all=False)

CHANNELS: tuple[ChannelSpec, ...] = (WEBSOCKET, EMAIL, APNS, WEBHOOK)
"""Every channel Herald has. Append a new one with the next unused bit."""


class ChannelRegistryError(ValueError):
    """The channel declarations contradict each other (a repeated name or bit, an unknown fallback)."""


@dataclass(frozen=True, slots=True)
class ChannelRegistry:
    """Checked, canonically ordered channel declarations and what derives from them."""

    specs: tuple[ChannelSpec, ...]
    """The declarations, in storage-bit order (the canonical order of every channel list)."""

    @classmethod
    def of(cls, declared: Iterable[ChannelSpec]) -> ChannelRegistry:
        """Check ``declared`` and order it by bit; ``ChannelRegistryError`` if inconsistent."""
        specs = tuple(sorted(declared, key=lambda s: s.bit))
        names = [s.name for s in specs]
        bits = [s.bit for s in specs]
        if len(set(names)) != len(names):
            raise ChannelRegistryError(f"channel names repeat: {names}")
        if len(set(bits)) != len(bits):
            raise ChannelRegistryError(f"channel storage bits repeat: {bits}")
        for spec in specs:
            if not 0 <= spec.bit <= MAX_BIT:
                raise ChannelRegistryError(f"channel {spec.name}: bit {spec.bit} is outside 0..{MAX_BIT}")
            if not spec.name or spec.name == "all" or not spec.name.isascii() or not spec.name.islower():
                raise ChannelRegistryError(f"channel name {spec.name!r} must be lower-case ASCII and not 'all'")
            if spec.fallback_after is not None and spec.fallback_after not in names:
                raise ChannelRegistryError(f"channel {spec.name}: falls back after unknown {spec.fallback_after!r}")
            if spec.platform is not None and spec.target != "device_token":
                raise ChannelRegistryError(f"channel {spec.name}: only a device_token channel declares a platform")
            if spec.platform is not None:
                p = spec.platform.name
                if not 1 <= len(p) <= PLATFORM_MAX or not p.isascii() or not p.isalnum() or not p.islower():
                    raise ChannelRegistryError(f"platform {p!r} must be 1 to {PLATFORM_MAX} lower-case letters/digits")
        platforms = [s.platform.name for s in specs if s.platform is not None]
        if len(set(platforms)) != len(platforms):
            raise ChannelRegistryError(f"device platforms repeat: {platforms}")
        return cls(specs)

    def plus(self, *specs: ChannelSpec) -> ChannelRegistry:
        """This registry with ``specs`` declared too (checked like any declaration)."""
        return ChannelRegistry.of((*self.specs, *specs))

    @property
    def names(self) -> tuple[str, ...]:
        """Channel names in canonical (storage-bit) order."""
        return tuple(s.name for s in self.specs)

    @property
    def all(self) -> tuple[str, ...]:
        """What a request for ``all`` channels resolves to, in canonical order."""
        return tuple(s.name for s in self.specs if s.in_all)

    @property
    def handed_off(self) -> tuple[str, ...]:
        """Channels on the generic delivery path (a sink per target, retries, ``herald redeliver``):
        every channel but the live WebSocket."""
        return tuple(s.name for s in self.specs if s.target != "connection")

    @property
    def bits(self) -> Mapping[str, int]:
        """Mask bit of each channel in ``notifications.channel_mask``."""
        return {s.name: 1 << s.bit for s in self.specs}

    @property
    def fallbacks(self) -> Mapping[str, str]:
        """Fallback chain: channel -> the channel it waits on (``{"email": "websocket"}``)."""
        return {s.name: s.fallback_after for s in self.specs if s.fallback_after is not None}

    @property
    def platforms(self) -> Mapping[str, DevicePlatform]:
        """Device platforms, by name, in canonical (storage-bit) order of their channels."""
        return {s.platform.name: s.platform for s in self.specs if s.platform is not None}

    def platform_of(self, channel: str) -> str | None:
        """The device platform ``channel`` pushes to; ``None`` for a channel that has none."""
        spec = self.spec(channel)
        return None if spec.platform is None else spec.platform.name

    def spec(self, name: str) -> ChannelSpec:
        """The declaration of ``name``; ``KeyError`` for an unknown channel."""
        for s in self.specs:
            if s.name == name:
                return s
        raise KeyError(name)


REGISTRY = ChannelRegistry.of(CHANNELS)
"""The registry of ``CHANNELS``."""


def platforms() -> Mapping[str, DevicePlatform]:
    """The device platforms of the registry, read when called.

    Device code (event checks, the registry fold, the read model, REST) asks here rather
    than keeping its own copy, so a channel declared into ``REGISTRY`` (a test's channel)
    brings its platform everywhere at once.
    """
    return REGISTRY.platforms


def canonical_token(platform: str, token: object) -> str | None:
    """``token`` as stored for ``platform``; ``None`` if the token or the platform is not valid."""
    declared = platforms().get(platform)
    return None if declared is None else declared.canonical(token)
