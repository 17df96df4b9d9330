"""Delivery work records: what a channel's sink topic carries.

The value is the ``notification.accepted`` CloudEvent itself (so a sink needs no other
lookup); a retry carries its attempt number and target in ``herald-attempt`` and
``herald-target`` headers. First attempts have neither header.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.codec import encode
from schemas.envelope import Envelope
from streams.publish import send
from streams.topics import Topics

ATTEMPT_HEADER = "herald-attempt"
TARGET_HEADER = "herald-target"


async def hand_off(
    topics: Topics, channel: str, cause: Envelope, *, attempt: int = 1, target: str | None = None
) -> None:
    """Put one delivery of ``cause`` (a ``notification.accepted``) on ``channel``'s sink topic.

    Called from agents only: like ``streams.publish.append`` it does not wait for the
    broker's acknowledgement, because Faust flushes its producer before committing the
    input offset (at-least-once without a round trip per record on the router's hot path).
    """
    headers: list[tuple[str, bytes]] = []
    if attempt > 1:
        headers.append((ATTEMPT_HEADER, str(attempt).encode()))
    if target is not None:
        headers.append((TARGET_HEADER, target.encode()))
    await topics.deliveries[channel].send(
        key=(cause.userid or "").encode(), value=encode(cause), headers=headers or None
    )


async def hand_off_raw(topics: Topics, channel: str, user_id: str, accepted: bytes) -> None:
    """A first attempt on ``channel`` of an acceptance already encoded (no re-encoding on the hot path).

    The record (no headers) goes to the app's producer directly (``streams.publish.send``),
    without Faust's per-message bookkeeping.
    """
    await send(topics.deliveries[channel], user_id.encode(), accepted)


def work_of(headers: Iterable[tuple[str, bytes]]) -> tuple[int, str | None]:
    """``(attempt, target)`` of a work record (``(1, None)`` for a first attempt)."""
    attempt, target = 1, None
    for key, value in headers:
        if key == ATTEMPT_HEADER:
            attempt = max(1, int(value.decode() or "1"))
        elif key == TARGET_HEADER:
            target = value.decode()
    return attempt, target
