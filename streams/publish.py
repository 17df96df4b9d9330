"""Appending envelopes to topics from inside a Faust agent."""

from __future__ import annotations

from collections.abc import Iterable

import faust

from schemas.codec import encode
from schemas.envelope import Envelope


async def append(topic: faust.TopicT, envelopes: Iterable[Envelope]) -> None:
    """Send ``envelopes`` keyed by user, in order, without waiting for each acknowledgement.

    At-least-once still holds: Faust flushes its producer (waits for every pending
    acknowledgement) before it commits the input offsets, so an input whose outputs
    were lost in a crash is processed again. Not waiting per record lets the producer
    pipeline sends instead of paying one broker round trip per event.
    """
    for env in envelopes:
        await topic.send(key=(env.userid or "").encode(), value=encode(env))
