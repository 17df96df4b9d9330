"""Appending envelopes to topics, waiting for the broker's acknowledgement."""

from __future__ import annotations

from collections.abc import Iterable

import faust

from schemas.codec import encode
from schemas.envelope import Envelope


async def append(topic: faust.TopicT, envelopes: Iterable[Envelope]) -> None:
    """Send ``envelopes`` keyed by user and wait until the broker has them all.

    Waiting before the agent moves on is what makes processing at-least-once: the
    input offset is committed only after its outputs are durable.
    """
    futures = [
        await topic.send(key=(env.userid or "").encode(), value=encode(env))
        for env in envelopes
    ]
    for fut in futures:
        await fut
