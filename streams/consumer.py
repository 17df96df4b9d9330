"""Faust's aiokafka consumer with a configurable fetch wait.

Faust hard-codes ``fetch_max_wait_ms=1500``. On Apache Kafka a fetch returns as soon as
data arrives, so the value only bounds idle polling; on brokers that hold a fetch for
the full wait (Tansu, used by ``herald dev`` and the tests) it adds up to that wait to
every hop of the pipeline. ``Settings.kafka_fetch_max_wait_ms`` sets it instead.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


def install_fetch_wait(app: faust.App, fetch_max_wait_ms: int) -> None:
    """Make ``app``'s Kafka consumer use ``fetch_max_wait_ms``."""

    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            # Read by AIOKafkaConsumer.start() when it builds its Fetcher.
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

    class Consumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    app.transport.Consumer = Consumer  # type: ignore[misc]  # per-app override of the class default
