"""A known event sequence for projection tests: envelope builders and a raw appender."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas.codec import encode
from schemas.envelope import Envelope
from schemas.events import (
    DeliveryAbandoned,
    DeliveryDeferred,
    DeliveryFailed,
    DeliveryRetryScheduled,
    DeliverySucceeded,
    Event,
    NotificationAccepted,
    NotificationDeleted,
    NotificationRateLimited,
    NotificationRead,
    NotificationRejected,
)
from schemas.ids import derived_id, uuid7

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


class Log:
    """Builds envelopes with ids derived from a seed and a clock that ticks one second per event."""

    def __init__(self, seed: str | None = None, start: datetime = T0) -> None:
        self.seed = seed or uuid7()
        self.now = start
        self.envelopes: list[Envelope] = []

    def _env(self, event: Event, subject: str | None, priority: str | None = None) -> Envelope:
        self.now += timedelta(seconds=1)
        env = Envelope(
            id=derived_id(self.seed, str(len(self.envelopes))),
            source="tests",
            time=self.now,
            data=event,
            subject=subject,
            userid=getattr(event, "user_id", None),
            priority=priority,
            correlationid=subject,
        )
        self.envelopes.append(env)
        return env

    def accepted(
        self,
        user: str,
        nid: str | None = None,
        *,
        priority: str = "medium",
        channels: tuple[str, ...] = ("websocket",),
        title: str = "t",
        category: str = "",
        data: dict[str, Any] | None = None,
    ) -> str:
        nid = nid or derived_id(self.seed, "n", str(len(self.envelopes)))
        self._env(
            NotificationAccepted(
                notification_id=nid,
                user_id=user,
                title=title,
                body="b",
                priority=priority,
                channels=channels,
                category=category,
                data=data or {},
                requested_at=self.now + timedelta(seconds=1),
            ),
            nid,
            priority,
        )
        return nid

    def succeeded(
        self,
        user: str,
        nid: str,
        channel: str = "websocket",
        *,
        latency_ms: float = 10.0,
        target: str = "node",
        provider_id: str | None = None,
        attempt: int = 1,
    ) -> None:
        self._env(
            DeliverySucceeded(
                notification_id=nid,
                user_id=user,
                channel=channel,
                target=target,
                latency_ms=latency_ms,
                provider_id=provider_id,
                attempt=attempt,
            ),
            nid,
        )

    def deferred(self, user: str, nid: str, channel: str = "websocket") -> None:
        self._env(DeliveryDeferred(notification_id=nid, user_id=user, channel=channel, reason="offline"), nid)

    def failed(self, user: str, nid: str, channel: str, *, attempt: int, retriable: bool, target: str = "x") -> None:
        self._env(
            DeliveryFailed(
                notification_id=nid,
                user_id=user,
                channel=channel,
                target=target,
                attempt=attempt,
                retriable=retriable,
                error="boom",
            ),
            nid,
        )

    def retry(self, user: str, nid: str, channel: str, *, attempt: int, target: str = "x") -> None:
        self._env(
            DeliveryRetryScheduled(
                notification_id=nid,
                user_id=user,
                channel=channel,
                target=target,
                attempt=attempt,
                due_at=self.now + timedelta(seconds=30),
                delay_seconds=30.0,
            ),
            nid,
        )

    def abandoned(self, user: str, nid: str, channel: str, *, attempts: int, target: str = "x") -> None:
        self._env(
            DeliveryAbandoned(
                notification_id=nid, user_id=user, channel=channel, target=target, attempts=attempts, error="gave up"
            ),
            nid,
        )

    def read(self, user: str, nid: str) -> None:
        self._env(NotificationRead(notification_id=nid, user_id=user), nid)

    def deleted(self, user: str, nid: str) -> None:
        self._env(NotificationDeleted(notification_id=nid, user_id=user), nid)

    def rejected(self, user: str) -> str:
        nid = derived_id(self.seed, "r", str(len(self.envelopes)))
        self._env(NotificationRejected(notification_id=nid, user_id=user, reasons=("bad",)), nid)
        return nid

    def rate_limited(self, user: str, priority: str = "low") -> str:
        nid = derived_id(self.seed, "l", str(len(self.envelopes)))
        self._env(
            NotificationRateLimited(
                notification_id=nid,
                user_id=user,
                priority=priority,
                limit=20,
                window_seconds=3600,
                retry_after_seconds=10.0,
            ),
            nid,
            priority,
        )
        return nid


async def append(bootstrap: str, topic: str, envelopes: list[Envelope]) -> None:
    """Append envelopes to ``topic`` keyed by user, one acknowledged record at a time (log order)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=1)
    await producer.start()
    try:
        for env in envelopes:
            await producer.send_and_wait(topic, key=(env.userid or "").encode(), value=encode(env))
    finally:
        await producer.stop()
