"""Faust's aiokafka consumer with a configurable fetch wait, handing records to the main loop sooner.

Faust hard-codes ``fetch_max_wait_ms=1500``. On Apache Kafka a fetch returns as soon as
data arrives, so the value only bounds idle polling; on brokers that hold a fetch for
the full wait (Tansu, used by ``herald dev`` and the tests) it adds up to that wait to
every hop of the pipeline. ``Settings.kafka_fetch_max_wait_ms`` sets it instead.

Faust's consumer runs in a thread of its own (its own event loop): every fetch answer is
read there and every poll's records are handed to the worker's main loop, so a record
crosses threads twice or more, and each time the thread waiting for the GIL waits while the
other runs Python (a worker's main loop deciding a poll's requests, the consumer thread
reading a fetch), up to Python's switch interval (5 ms by default). A process that builds
such a consumer lowers the interval to ``SWITCH_INTERVAL``.

The consumer of the worker that runs the sinks also reads the event log (its device and contact
registry folds it; a worker without sinks copies the contacts from their table's changelog
instead, ``streams.device_registry.ContactsOnly``), and
its own appends give the log new records all the time, so every fetch carried the log's
partitions too. On Tansu a fetch that finds new records costs in proportion to the record
batches already in the partition, so the request records' fetches slowed as the log grew.
``Settings.kafka_event_log_fetch_interval_ms`` (0 by default: every fetch) asks for the log in
at most one fetch per interval (``streams.internals.SparseFetch``); the registry then sees a
change up to that much later. The benchmarks set 100 ms (``benchmarks.common``).
"""

from __future__ import annotations

import sys
from collections.abc import Set
from typing import Any

import faust

from streams.internals import SparseFetch, consumer_with_fetch_wait

SWITCH_INTERVAL = 0.0005
"""Seconds a thread that wants the GIL waits at most for the one running Python (``sys.setswitchinterval``).

``benchmarks.throughput --stages``, steady 500/s, alternating x3 with Python's 5 ms: publish ->
polled p99 112/127/70 -> 76/79/50 ms, polled -> inboxed (the hop to the main loop) p99 38/50/29
-> 27/31/13 ms, publish -> frame p99 195/193/118 -> 113/115/75 ms; the worker's CPU per
notification unchanged (a forced switch happens only while the other thread waits)."""


def hand_over_sooner() -> None:
    """Lower this process's switch interval to ``SWITCH_INTERVAL`` (never raise it)."""
    if sys.getswitchinterval() > SWITCH_INTERVAL:
        sys.setswitchinterval(SWITCH_INTERVAL)


def install_fetch_wait(
    app: faust.App, fetch_max_wait_ms: int, *, sparse_topics: Set[str] = frozenset(), sparse_interval_ms: int = 0
) -> None:
    """Make ``app``'s Kafka consumer use ``fetch_max_wait_ms`` (the private hook: ``streams.internals``);
    once it builds its consumer thread, the process hands the GIL over sooner (``hand_over_sooner``).

    With ``sparse_interval_ms``, the partitions of ``sparse_topics`` are asked for in at most one
    fetch every that many milliseconds (``streams.internals.SparseFetch``; a new spacing per client).
    """

    def sparse() -> SparseFetch | None:
        if not sparse_topics or sparse_interval_ms <= 0:
            return None
        return SparseFetch(sparse_topics, sparse_interval_ms / 1000)

    base: Any = consumer_with_fetch_wait(fetch_max_wait_ms, sparse=sparse)

    class Consumer(base):  # type: ignore[misc,valid-type]
        def _new_consumer_thread(self) -> Any:
            hand_over_sooner()
            return super()._new_consumer_thread()

    app.transport.Consumer = Consumer  # type: ignore[misc]  # per-app override
