"""The off-line channels configured in settings: the sinks a worker runs."""

from __future__ import annotations

from engine.settings import Settings
from streams.apns_sink import ApnsSink
from streams.delivery_attempt import Sink
from streams.device_registry import DeviceRegistry
from streams.email_sink import EmailSink


def configured_sinks(settings: Settings) -> list[Sink]:
    """Email when ``HERALD_SMTP_HOST`` is set, APNs when an APNs key is; one registry shared by both."""
    registry = DeviceRegistry()
    sinks: list[Sink] = []
    if settings.smtp_host:
        sinks.append(EmailSink(settings, registry))
    if settings.apns_key or settings.apns_key_path:
        sinks.append(ApnsSink(settings, registry))
    return sinks
