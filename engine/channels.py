"""The channel registry as the engine sees it: the declarations of ``schemas.channels``.

The channels are declared once, in ``schemas/channels.py`` (a channel name is part of
the event contract, and the codec, which may not import ``engine``, checks every
event's channel against the registry). This module keeps the engine's import path for
routing, priorities, projections and the sinks' registry.
"""

from __future__ import annotations

from schemas.channels import (
    APNS,
    CHANNELS,
    DEFAULT_PLATFORM,
    EMAIL,
    IOS,
    MAX_BIT,
    REGISTRY,
    WEBHOOK,
    WEBSOCKET,
    ChannelRegistry,
    ChannelRegistryError,
    ChannelSpec,
    DevicePlatform,
    TargetKind,
)

__all__ = [
    "APNS",
    "CHANNELS",
    "DEFAULT_PLATFORM",
    "EMAIL",
    "IOS",
    "MAX_BIT",
    "REGISTRY",
    "WEBHOOK",
    "WEBSOCKET",
    "ChannelRegistry",
    "ChannelRegistryError",
    "ChannelSpec",
    "DevicePlatform",
    "TargetKind",
]
