"""Shared helpers of the benchmark programs: a broker, a scratch database, statistics."""

from __future__ import annotations

import atexit
import contextlib
import os
import statistics
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence

import psycopg

from engine.settings import Settings
from herald.broker import free_port, tansu_process
from streams.app import remove_faust_datadirs

PG_ADMIN = os.environ.get("HERALD_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.asynccontextmanager
async def broker() -> AsyncIterator[str]:
    """``HERALD_BENCH_KAFKA`` if set, else a fresh Tansu on a free port."""
    external = os.environ.get("HERALD_BENCH_KAFKA")
    if external:
        yield external
        return
    async with tansu_process("127.0.0.1", free_port()) as bootstrap:
        yield bootstrap


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """A Postgres database created for the run and dropped after it."""
    name = f"herald_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


TESTS_FETCH_WAIT_MS = 20
"""The consumers' fetch wait of the tests on Tansu (``HERALD_KAFKA_FETCH_MAX_WAIT_MS``), the benchmarks' default."""
EVENT_LOG_FETCH_INTERVAL_MS = 100
"""The worker's event-log fetch interval in the benchmarks (``HERALD_KAFKA_EVENT_LOG_FETCH_INTERVAL_MS``).

On Tansu the worker's fetches carried the log's new records in every partition, and each such
fetch costs the broker in proportion to the record batches already there: in the steady phase
of ``benchmarks.throughput`` (500/s) publish -> frame p50 / p99 went from 42.9 / 97.2 ms (every
fetch) to 21.4 / 49.4 ms with 100 (same checkout, one round each, load 2.5); the request
records' fetch, no longer behind the log's, is then held by Tansu for about half its wait."""


_APP_IDS: set[str] = set()
"""The Faust app ids of this run, whose (empty) data directories go when it ends."""


atexit.register(remove_faust_datadirs, _APP_IDS)


def bench_settings(bootstrap: str, database_url: str, **overrides: object) -> Settings:
    """Settings of a benchmark run: the same Tansu workarounds as the tests (see DESIGN.md)."""
    tag = uuid.uuid4().hex[:6]
    values: dict[str, object] = {
        "kafka_bootstrap": bootstrap,
        "topic_prefix": f"b{tag}.",
        "app_id": f"herald-bench-{tag}",
        "projector_group": f"herald-bench-projector-{tag}",
        "database_url": database_url,
        "http_port": 0,
        # Batches of one record only matter for table recovery after a restart (Tansu end
        # offsets); a benchmark run never restarts, so producers batch as in production.
        "producer_max_batch_size": 16384,
        "kafka_session_timeout": 6.0,
        "kafka_heartbeat_interval": 1.0,
        "kafka_rebalance_timeout": 6.0,
        "kafka_fetch_max_wait_ms": TESTS_FETCH_WAIT_MS,
        # Tansu: a fetch that finds new records costs in proportion to the partition's record batches,
        # and the worker's own appends give the log new records all the time (streams.consumer).
        "kafka_event_log_fetch_interval_ms": EVENT_LOG_FETCH_INTERVAL_MS,
        "log_level": "WARNING",
        "node_id": f"bench-{tag}",
    }
    values.update(overrides)
    _APP_IDS.add(f"herald-bench-{tag}")
    return Settings.from_env({}, **values)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(latencies_ms: Sequence[float]) -> str:
    """``p50 / p99`` in milliseconds."""
    return f"p50 {statistics.median(latencies_ms):7.1f} ms  p99 {percentile(latencies_ms, 99):7.1f} ms"


Row = tuple[str, str, str, str, str]
"""A line of ``make bench``'s summary: measure, Herald, baseline, ratio, target."""
