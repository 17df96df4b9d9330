"""Delivery attempts and their outcome: success, retry with backoff, or abandonment.

Generic over channels: a sink reports a failure by raising ``DeliveryError`` (with
``retriable``); ``attempt_outcome`` turns what happened into the events of the log.
Backoff is exponential with jitter; the jitter is derived from the attempt's identity
(not from a random generator), so processing the same attempt twice schedules the
same retry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from engine.notification import accepted_event, follow
from schemas.envelope import Envelope
from schemas.errors import HeraldError
from schemas.events import (
    DeliveryAbandoned,
    DeliveryFailed,
    DeliveryRetryScheduled,
    DeliverySucceeded,
)

SOURCE = "herald/delivery"


class DeliveryError(HeraldError):
    """A sink could not hand a notification to its target.

    ``retriable`` is true for transport trouble (timeouts, 429/5xx, SMTP 4xx) and
    false for permanent refusals (bad address, invalid device token, 4xx).
    """

    def __init__(self, reason: str, *, retriable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retriable = retriable


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how late a failed delivery is tried again."""

    max_attempts: int = 5
    """Attempts in total (the first one included) before giving up."""
    base_delay_seconds: float = 60.0
    """Delay before the first retry (before jitter)."""
    factor: float = 2.0
    """Each further retry waits this many times longer."""
    max_delay_seconds: float = 3600.0
    """Cap on one delay."""
    jitter: float = 0.2
    """Delays are spread uniformly over +/- this fraction, so retries do not stampede."""


def unit_interval(*parts: str) -> float:
    """A number in [0, 1) derived from ``parts``: deterministic jitter."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def backoff(policy: RetryPolicy, attempt: int, *, spread: float) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based); ``spread`` in [0, 1)."""
    raw = policy.base_delay_seconds * policy.factor ** (attempt - 1)
    jittered = raw * (1 - policy.jitter + 2 * policy.jitter * spread)
    return round(min(policy.max_delay_seconds, jittered), 3)


def attempt_outcome(
    cause: Envelope,
    *,
    channel: str,
    target: str,
    attempt: int,
    error: DeliveryError | None,
    provider_id: str | None = None,
    policy: RetryPolicy,
    now: datetime,
) -> tuple[Envelope, ...]:
    """Events of one attempt to deliver ``cause`` (a ``notification.accepted``) on ``channel``.

    Success -> ``delivery.succeeded``. A retriable failure with attempts left ->
    ``delivery.failed`` + ``delivery.retry_scheduled``. Otherwise ``delivery.failed`` +
    ``delivery.abandoned`` (the caller dead-letters the work).
    """
    accepted = accepted_event(cause)
    ids = {"notification_id": accepted.notification_id, "user_id": accepted.user_id, "channel": channel}
    if error is None:
        latency_ms = max(0.0, (now - accepted.requested_at).total_seconds() * 1000)
        ok = DeliverySucceeded(
            **ids, target=target, latency_ms=round(latency_ms, 3), provider_id=provider_id, attempt=attempt
        )
        return (follow(cause, ok, now=now, source=SOURCE),)
    failed = DeliveryFailed(**ids, target=target, attempt=attempt, retriable=error.retriable, error=error.reason)
    events = [follow(cause, failed, now=now, source=SOURCE)]
    if error.retriable and attempt < policy.max_attempts:
        spread = unit_interval(accepted.notification_id, channel, target, str(attempt))
        delay = backoff(policy, attempt, spread=spread)
        retry = DeliveryRetryScheduled(
            **ids, target=target, attempt=attempt + 1, due_at=now + timedelta(seconds=delay), delay_seconds=delay
        )
        events.append(follow(cause, retry, now=now, source=SOURCE))
    else:
        reason = error.reason if not error.retriable else f"gave up after {attempt} attempts: {error.reason}"
        abandoned = DeliveryAbandoned(**ids, target=target, attempts=attempt, error=reason)
        events.append(follow(cause, abandoned, now=now, source=SOURCE))
    return tuple(events)
