"""Consumer lag per role, read from each role's own Kafka consumer when ``/metrics`` is scraped.

``kafka_consumer_lag{role, group, topic, partition}``: records on the broker that the
role's consumer has not read yet (the partition's last fetched high watermark minus the
consumer's position), for every partition assigned to it. Each role registers its own
consumer (``watch``): the worker its Faust consumer, the projector its event-log
consumer. Nothing is polled for it: the figures are what the client already knows
from its fetches, so a scrape costs no broker round trip. A partition the consumer has
not fetched from yet (no high watermark) has no series until it has.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.internals import fetched_position, kafka_client

log = logging.getLogger(__name__)

ClientOf = Callable[[], Any]
"""Returns the role's aiokafka consumer, or ``None`` while it has none."""


def partition_lags(client: Any) -> list[tuple[str, int, int]]:
    """``(topic, partition, lag)`` of every assigned partition with a known high watermark and position."""
    out = []
    for tp in sorted(client.assignment(), key=lambda tp: (tp.topic, tp.partition)):
        fetched = fetched_position(client, tp)
        if fetched is not None:
            highwater, position = fetched
            out.append((tp.topic, tp.partition, max(0, highwater - position)))
    return out


class _LagCollector(Collector):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[str, str, ClientOf]] = {}
        self._ids = itertools.count()

    def watch(self, role: str, group: str, client_of: ClientOf) -> int:
        with self._lock:
            key = next(self._ids)
            self._watched[key] = (role, group, client_of)
        return key

    def unwatch(self, key: int) -> None:
        with self._lock:
            self._watched.pop(key, None)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "kafka_consumer_lag",
            "Records on the broker not yet read by the role's consumer (high watermark - position)",
            labels=["role", "group", "topic", "partition"],
        )
        with self._lock:
            watched = list(self._watched.values())
        for role, group, client_of in watched:
            try:
                client = client_of()
                lags = partition_lags(client) if client is not None else []
            except Exception:  # a consumer mid-rebalance: no figures this scrape
                log.debug("consumer lag not readable", extra={"role": role}, exc_info=True)
                continue
            for topic, partition, lag in lags:
                family.add_metric([role, group, topic, str(partition)], lag)
        yield family


_LAG = _LagCollector()
REGISTRY.register(_LAG)


def watch(role: str, group: str, client_of: ClientOf) -> Callable[[], None]:
    """Report the lag of ``client_of()``'s assigned partitions as ``role``/``group``; returns the unwatch."""
    key = _LAG.watch(role, group, client_of)
    return lambda: _LAG.unwatch(key)


def faust_client(app: Any) -> ClientOf:
    """The aiokafka consumer of a Faust app (created when the app starts)."""
    return lambda: kafka_client(app.consumer)
