"""Helpers for the stream-core integration tests: a test sink on the generic retry path and
per-module settings (the topic tail is ``tests.support.log_reader.TopicTail``)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.retry import DeliveryError
from engine.settings import Settings
from schemas.events import NotificationAccepted
from tests.support.settings import isolated_settings


def core_settings(kafka_bootstrap: str, redis_url: str, **overrides: Any) -> Settings:
    """Isolated settings (own topics and groups) with the Tansu workarounds (``tests/support/settings.py``)."""
    return isolated_settings(kafka_bootstrap, redis_url, **overrides)


@dataclass
class Sent:
    """One successful send seen by the test sink."""

    notification_id: str
    target: str
    at: float


@dataclass
class ScriptedEmailSink:
    """A real in-process sink on the generic retry path, its behaviour scripted by the request.

    ``data.test_fail_first``: the first attempt fails with a retriable error.
    ``data.test_fail``: ``"always"`` fails retriably every time, ``"permanent"`` fails for good.
    """

    channel: str = "email"
    sent: list[Sent] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)

    async def targets(self, accepted: NotificationAccepted) -> Sequence[str]:
        return [f"{accepted.user_id}@example.test"]

    async def send(self, accepted: NotificationAccepted, target: str) -> str | None:
        nid = accepted.notification_id
        self.calls[nid] += 1
        mode = accepted.data.get("test_fail")
        if mode == "permanent":
            raise DeliveryError("550 mailbox unavailable", retriable=False)
        if mode == "always" or (accepted.data.get("test_fail_first") and self.calls[nid] == 1):
            raise DeliveryError("421 service not available, try later", retriable=True)
        self.sent.append(Sent(nid, target, time.time()))
        return f"<{nid}@test>"

    def sends_for(self, notification_id: str) -> list[Sent]:
        return [s for s in self.sent if s.notification_id == notification_id]
