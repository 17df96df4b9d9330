"""The channel registry's I/O half: which sink serves each channel, and when it runs.

``engine.channels`` declares the channels; this module gives each one its sink
factory and the test of whether its settings section configures it, so a worker's
sinks are derived (``streams.channels.configured_sinks``) instead of an if-chain that
every new channel had to edit. WebSocket has no entry's factory: it is the live path
(``streams.router``, ``streams.websocket_sink``), installed on every worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.channels import REGISTRY
from engine.settings import Settings
from streams.apns_sink import ApnsSink
from streams.delivery_attempt import Sink
from streams.device_registry import DeviceRegistry
from streams.email_sink import EmailSink
from streams.webhook_sink import WebhookSink


@dataclass(frozen=True, slots=True)
class SinkEntry:
    """How a worker gets the sink of one channel."""

    configured: Callable[[Settings], bool]
    """Whether ``settings`` configure the channel (its sink runs only then)."""
    factory: Callable[[Settings, DeviceRegistry], Sink] | None
    """Builds the sink, sharing the worker's device registry; ``None``: the live path."""


SINKS: dict[str, SinkEntry] = {
    "websocket": SinkEntry(lambda s: True, None),
    "email": SinkEntry(lambda s: bool(s.smtp_host), EmailSink),
    "apns": SinkEntry(lambda s: bool(s.apns_key or s.apns_key_path), ApnsSink),
    "webhook": SinkEntry(lambda s: bool(s.webhook_secret), WebhookSink),
}
"""Sink of every channel of ``engine.channels.REGISTRY`` (checked at import)."""

if set(SINKS) != set(REGISTRY.names):  # a declared channel without a sink, or the reverse
    raise RuntimeError(f"streams.channel_registry.SINKS {sorted(SINKS)} != channels {sorted(REGISTRY.names)}")
