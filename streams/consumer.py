"""Faust's aiokafka consumer with a configurable fetch wait.

Faust hard-codes ``fetch_max_wait_ms=1500``. On Apache Kafka a fetch returns as soon as
data arrives, so the value only bounds idle polling; on brokers that hold a fetch for
the full wait (Tansu, used by ``herald dev`` and the tests) it adds up to that wait to
every hop of the pipeline. ``Settings.kafka_fetch_max_wait_ms`` sets it instead.
"""

from __future__ import annotations

import faust

from streams.internals import consumer_with_fetch_wait


def install_fetch_wait(app: faust.App, fetch_max_wait_ms: int) -> None:
    """Make ``app``'s Kafka consumer use ``fetch_max_wait_ms`` (the private hook: ``streams.internals``)."""
    app.transport.Consumer = consumer_with_fetch_wait(fetch_max_wait_ms)  # type: ignore[misc]  # per-app override
