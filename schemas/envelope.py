"""The CloudEvents 1.0 envelope around every request and event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from schemas.events import Event, slot_init

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"


@slot_init
@dataclass(frozen=True, slots=True)
class Envelope:
    """One CloudEvent: context attributes plus the typed ``data``."""

    id: str
    """Unique event id (UUIDv7 for events Herald emits; any string from producers)."""
    source: str
    """Who emitted it (a producer name, ``herald/ingest``, ...)."""
    time: datetime
    """When it happened, timezone-aware."""
    data: Event
    """Typed payload; its class gives the CloudEvents ``type``."""
    subject: str | None = None
    """Notification id the event concerns."""
    userid: str | None = None
    """Extension: recipient user id (also the Kafka key)."""
    priority: str | None = None
    """Extension: notification priority."""
    correlationid: str | None = None
    """Extension: id shared by every event caused by one request."""

    @property
    def type(self) -> str:
        """CloudEvents ``type``, e.g. ``notification.accepted``."""
        return self.data.TYPE
