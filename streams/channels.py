"""The off-line channels configured in settings: the sinks a worker runs."""

from __future__ import annotations

from engine.channels import REGISTRY
from engine.settings import Settings
from streams.channel_registry import SINKS
from streams.delivery_attempt import Sink
from streams.device_registry import DeviceRegistry


def configured_sinks(settings: Settings) -> list[Sink]:
    """A sink for each channel whose settings configure it (``streams.channel_registry``), in
    canonical order: email when ``HERALD_SMTP_HOST`` is set, APNs when an APNs key is, webhook
    when ``HERALD_WEBHOOK_SECRET`` is; one device registry shared by all."""
    registry = DeviceRegistry()
    sinks: list[Sink] = []
    for name in REGISTRY.names:
        entry = SINKS[name]
        if entry.factory is not None and entry.configured(settings):
            sinks.append(entry.factory(settings, registry))
    return sinks
