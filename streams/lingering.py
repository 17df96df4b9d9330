"""Sending what a producer holds back for its linger now, for a live frame that waits on it.

A live frame leaves the worker only once its acceptance is acknowledged on the log
(``streams.live_dispatch``). The producer holds each new batch back for its linger
(``HERALD_PRODUCER_LINGER_MS``) in case more records join it, so every frame waited that
linger on top of the broker's round trip. ``send_lingering`` ends the wait of the
batches queued so far: each goes at the sender's next pass, as with no linger, and keeps
taking records until then (it is not closed, so a batch still forms while a request is in
flight: aiokafka sends one request per broker at a time). Nothing is waited for here.

aiokafka has no public call for this (``flush()`` waits out the linger), so this reaches
into its accumulator; the attributes are checked when the hook is built, as
``streams.internals`` checks its own, and a library that lacks one refuses to start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiokafka
from aiokafka.producer.message_accumulator import MessageAccumulator, MessageBatch
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.internals import AIOKAFKA, FAUST, Internal, check_internals

REQUIRED: tuple[Internal, ...] = (
    Internal(FAUST, faust_aiokafka.Producer, "_producer", "live frames", assigned=True),
    Internal(AIOKAFKA, aiokafka.AIOKafkaProducer, "_message_accumulator", "live frames", assigned=True),
    Internal(AIOKAFKA, MessageAccumulator, "_batches", "live frames", assigned=True),
    Internal(AIOKAFKA, MessageAccumulator, "_waiter_future", "live frames", assigned=True),
    Internal(AIOKAFKA, MessageBatch, "_linger_time", "live frames", assigned=True),
    # The sender decides with it whether a batch still lingers.
    Internal(AIOKAFKA, MessageBatch, "remaining_linger", "live frames", calls="self._linger_time"),
)


def send_lingering(producer: aiokafka.AIOKafkaProducer) -> None:
    """Make every batch ``producer`` holds back for its linger ready now, and wake its sender."""
    accumulator = producer._message_accumulator
    lingering = False
    for batches in accumulator._batches.values():
        for batch in batches:
            if batch._linger_time:
                batch._linger_time = 0
                lingering = True
    waiter = accumulator._waiter_future
    if lingering and not waiter.done():
        waiter.set_result(None)


def lingering_sender(client: Callable[[], aiokafka.AIOKafkaProducer | None]) -> Callable[[], None]:
    """A hook for ``LiveDispatch(push=...)``: ``send_lingering`` on the producer ``client()`` returns.

    ``client`` is asked on every call (the producer starts after the hook is built; ``None``
    until then). Raises ``LibraryInternalsChanged`` now if aiokafka lacks an attribute it uses.
    """
    check_internals(REQUIRED)

    def push() -> None:
        producer = client()
        if producer is not None:
            send_lingering(producer)

    return push


def faust_client(app: Any) -> Callable[[], aiokafka.AIOKafkaProducer | None]:
    """The aiokafka producer behind a Faust app's producer, once it has started."""

    def client() -> aiokafka.AIOKafkaProducer | None:
        producer: aiokafka.AIOKafkaProducer | None = getattr(app.producer, "_producer", None)
        return producer

    return client
