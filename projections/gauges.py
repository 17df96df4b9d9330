"""Read-model figures for ``/metrics``: notifications still pending, and database pool use.

Both are read when Prometheus scrapes, not maintained by hand: the pending count is one
indexed read of the projector's ``stat_counters`` (a few rows per event-log partition,
however many notifications exist), and the pool figures come from the SQLAlchemy pools
of this process's engines (``watch``), so a gauge can never drift from what it measures.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.models import StatCounterRow

log = logging.getLogger(__name__)


async def pending_count(engine: AsyncEngine) -> int:
    """Notifications accepted and not yet in a terminal state (status ``pending``; deleted ones excluded)."""
    c = StatCounterRow
    stmt = select(func.coalesce(func.sum(c.count), 0)).where(
        c.scope.like("p:%"), c.metric == "status", c.key == "pending"
    )
    async with engine.connect() as conn:
        return int((await conn.execute(stmt)).scalar_one())


class _PoolCollector(Collector):
    """``db_pool_checked_out`` and ``db_pool_size`` of every watched engine, by pool name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engines: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()

    def watch(self, engine: AsyncEngine, name: str) -> None:
        sync = engine.sync_engine
        with self._lock:
            self._engines[sync] = name

        def disposed(_: object) -> None:
            self.unwatch(sync)

        event.listen(sync, "engine_disposed", disposed)

    def unwatch(self, sync: Engine) -> None:
        with self._lock:
            self._engines.pop(sync, None)

    def collect(self) -> Iterator[Metric]:
        used = GaugeMetricFamily(
            "db_pool_checked_out", "Database connections checked out of the pool now", labels=["pool"]
        )
        size = GaugeMetricFamily(
            "db_pool_size", "Connections the pool keeps open (its configured size, overflow excluded)", labels=["pool"]
        )
        totals: dict[str, list[int]] = {}
        with self._lock:
            engines = list(self._engines.items())
        for sync, name in engines:
            pool = sync.pool
            checked_out = getattr(pool, "checkedout", None)
            pool_size = getattr(pool, "size", None)
            figures = totals.setdefault(name, [0, 0])
            figures[0] += int(checked_out()) if callable(checked_out) else 0
            figures[1] += int(pool_size()) if callable(pool_size) else 1
        for name, (n_used, n_size) in sorted(totals.items()):
            used.add_metric([name], n_used)
            size.add_metric([name], n_size)
        yield used
        yield size


_POOLS = _PoolCollector()
REGISTRY.register(_POOLS)


def watch_pool(engine: AsyncEngine, name: str) -> None:
    """Report ``engine``'s pool on ``/metrics`` as ``pool=name`` until the engine is disposed."""
    _POOLS.watch(engine, name)
