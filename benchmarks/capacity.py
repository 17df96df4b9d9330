"""The per-unit figures the capacity model (docs/capacity.md) multiplies up, measured here.

Throughput per core is already measured by the other programs (CPU ms per notification per
role in ``benchmarks/throughput.py``, events per CPU second in ``benchmarks/projector.py``);
what the model also needs is what a connection and a notification occupy:

- **gateway**: one real ``herald api`` process (Redis presence, the cluster-wide connection
  limit, the replay on connect) and a private ``redis-server`` of its own, so Redis's
  ``used_memory`` counts only this gateway's presence. The process's RSS and Redis's memory
  are read before and 3 s after N idle WebSocket connections (one per user) are up, for each
  N in ``--connections``: the per-connection slope, and whether it stays constant as N grows.
  Then the CPU time of the gateway and of Redis over ``--idle-seconds`` with nothing sent:
  what holding a connection costs (presence refreshes every 10 s, a ping every 30 s).
  Finally every client closes at once (a mass disconnect) and the presence ``leave`` calls
  the gateway logged as failed are counted.
- **admission state**: ``--acceptances`` requests (a fresh UUID id and an idempotency key
  each, over ``--users`` users) admitted through the worker's real ``AdmissionStore`` over a
  plain dict standing in for the in-memory Faust table: bytes of worker memory per accepted
  request in the 24 h dedupe window (table entries, expiry queues, rate windows; traced
  with ``tracemalloc``), and the time of the one pass that rebuilds the derived state after
  every rebalance, in CPU time per table entry.
- **storage**: ``--events`` synthetic events (``benchmarks/projector.py``'s mix: about 2.5 per
  notification, websocket plus email for 1 in 7 and APNs for 1 in 11, a read for 1 in 3) are
  appended to a fresh event log and applied by ``herald projector`` into a scratch Postgres
  database; then bytes per notification of every read-model table with its indexes
  (``pg_total_relation_size`` after ``VACUUM``), and bytes per event record on the log
  (key + value, before the broker's own overhead), and how much gzip would shrink them in
  producer batches of 100 records (Herald's producers do not compress today).

    uv run python -m benchmarks.capacity [--connections 2000,10000] [--idle-seconds 30]
        [--acceptances 200000] [--events 100000] [--users 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import shutil
import subprocess
import sys
import time
import tracemalloc
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import projector as projector_bench
from benchmarks import websocket as ws_bench
from benchmarks.admission import POLICY
from benchmarks.common import broker, scratch_database
from engine.admission import decide_admission, evolve, request_keys
from engine.notification import decide_request
from engine.priority import Priority
from engine.topics import TopicNames
from herald.broker import free_port
from schemas.envelope import Envelope
from schemas.events import NotificationAccepted, NotificationRequested
from streams.admission_store import AdmissionStore

PROJECT_DEADLINE_SECONDS = 900.0
"""Longest the projector may take to apply ``--events`` before the run fails."""


@contextlib.contextmanager
def private_redis() -> Iterator[tuple[str, int]]:
    """A ``redis-server`` of this run only (no persistence), so its memory is this gateway's."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"redis://127.0.0.1:{port}/0", proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def redis_used_memory(url: str) -> int:
    """``used_memory`` of the Redis server at ``url``, in bytes (waits for it to accept connections)."""
    client = Redis.from_url(url)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                info = await client.info("memory")
                return int(info["used_memory"])
            except RedisConnectionError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
    finally:
        await client.aclose()


async def gateway(n: int, procs: int, bootstrap: str, database_url: str, idle_seconds: float) -> dict[str, Any]:
    """RSS of one ``herald api`` and its Redis's memory before and after ``n`` idle connections,
    then the CPU both spend on them while nothing is sent (presence refreshes, heartbeats)."""
    with private_redis() as (redis_url, redis_pid):
        ws_bench.REDIS_URL = redis_url  # read by ws_bench.server() when it builds the gateway's settings
        redis_before = await redis_used_memory(redis_url)
        async with ws_bench.server("herald", bootstrap, database_url) as srv:
            await asyncio.sleep(1)
            rss_before = ws_bench.rss_kib(srv.pid)
            redis_idle = await redis_used_memory(redis_url)
            users = [(f"cap{i}", srv.url(f"cap{i}")) for i in range(n)]
            with ws_bench.clients(users, procs, True) as (_, replies):
                connected = sum(r[1] for r in replies)
                failed = sum(r[2] for r in replies)
                seconds = max(r[4] for r in replies)
                await asyncio.sleep(3)  # let the server settle (GC, a presence refresh)
                rss_after = ws_bench.rss_kib(srv.pid)
                redis_after = await redis_used_memory(redis_url)
                # Idle upkeep: presence refreshes every third of the presence TTL, pings every
                # heartbeat interval; measured over whole cycles of both.
                cpu_before = (projector_bench.cpu_seconds(srv.pid), projector_bench.cpu_seconds(redis_pid))
                await asyncio.sleep(idle_seconds)
                gateway_cpu = projector_bench.cpu_seconds(srv.pid) - cpu_before[0]
                redis_cpu = projector_bench.cpu_seconds(redis_pid) - cpu_before[1]
            # Leaving the block closes every client at once: a mass disconnect. Each close is
            # a presence `leave` through the gateway's Redis pool; count the ones that failed.
            await asyncio.sleep(15)
    server_log = ws_bench.ROOT / "test-output" / "bench-ws-herald.log"
    leave_failures = server_log.read_text(errors="replace").count("leaving presence failed")
    per = max(connected, 1)
    return {
        "n": n,
        "connected": connected,
        "failed": failed,
        "connect_per_s": connected / seconds if seconds else 0.0,
        "rss_before_mib": rss_before / 1024,
        "rss_after_mib": rss_after / 1024,
        "rss_kib_per_conn": (rss_after - rss_before) / per,
        "redis_base_mib": redis_before / 2**20,
        "redis_bytes_per_conn": (redis_after - redis_idle) / per,
        "idle_gateway_cpu_us_per_conn_s": gateway_cpu / idle_seconds / per * 1e6,
        "idle_redis_cpu_us_per_conn_s": redis_cpu / idle_seconds / per * 1e6,
        "leave_failures": leave_failures,
    }


def admission_state(acceptances: int, users: int, partitions: int = 48) -> dict[str, float]:
    """Worker memory per admitted request and the post-rebalance rebuild time per table entry."""
    start = datetime(2026, 12, 1, tzinfo=UTC)
    spacing = 20 * 3600 / acceptances  # spread over 20 h of the 24 h dedupe window
    table: dict[str, object] = {}
    store = AdmissionStore(table, POLICY)
    store.view("warm-up", (), "high")  # build the (empty) derived state before tracing
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(acceptances):
        at = start + timedelta(seconds=i * spacing)
        user = f"user-{(i * 7919) % users:08d}"
        rid = str(uuid.uuid4())
        request = Envelope(
            id=rid,
            source="capacity",
            time=at,
            data=NotificationRequested(user_id=user, title="t", idempotency_key=f"order-{uuid.uuid4()}"),
        )
        [env] = decide_request(request, topic_priority=Priority.HIGH, now=at)
        data = env.data
        assert isinstance(data, NotificationAccepted)
        partition = zlib.crc32(user.encode()) % partitions
        source = f"herald.requests.high/{partition}/{i}"
        state = store.view(user, request_keys(data), data.priority)
        outcome = decide_admission(state, env, source=source, policy=POLICY, now=at)
        after = evolve(state, outcome, source=source, policy=POLICY)
        if after is not state:
            store.save(user, state, after, partition=partition)
        del request, env, data, state, outcome, after
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    store.invalidate()
    started = time.process_time()  # CPU time: what the pass costs, whatever else shares the cores
    store.view("after-rebalance", (), "high")  # the one pass over the table a rebalance costs
    rebuild = time.process_time() - started
    return {
        "entries": len(table),
        "bytes_per_acceptance": held / acceptances,
        "bytes_per_entry": held / max(len(table), 1),
        "rebuild_us_per_entry": rebuild / max(len(table), 1) * 1e6,
        "rebuild_seconds": rebuild,
    }


def _table_sizes(dsn: str) -> tuple[int, int, dict[str, int]]:
    """(notifications, events applied, bytes of each public table with its indexes and TOAST)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        notifications = conn.execute("SELECT count(*) FROM notifications").fetchone()
        applied = conn.execute("SELECT count(*) FROM projected_events").fetchone()
        rows = conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c"
            " WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace ORDER BY 2 DESC"
        ).fetchall()
    return (
        int(notifications[0]) if notifications else 0,
        int(applied[0]) if applied else 0,
        {str(name): int(size) for name, size in rows},
    )


def compression_ratio(seed: str, n: int, users: int, batch: int = 100) -> float:
    """Raw / compressed bytes of the event records in batches of ``batch`` (a producer batch),
    deflate as in Kafka's gzip codec: what ``compression.type`` would save on the log's disks."""
    raw = compressed = 0
    records = [value for _, value in projector_bench.events(seed, n, users)]
    for start in range(0, len(records), batch):
        chunk = b"".join(records[start : start + batch])
        raw += len(chunk)
        compressed += len(zlib.compress(chunk, 6))
    return raw / max(compressed, 1)


async def storage(bootstrap: str, n: int, users: int) -> dict[str, Any]:
    """Bytes per notification in Postgres and per event on the log after projecting ``n`` events."""
    seed = secrets.token_hex(4)
    prefix = f"cap{seed}."
    topic = TopicNames(prefix).events
    record_bytes = sum(len(key) + len(value) for key, value in projector_bench.events(seed, n, users))
    ratio = compression_ratio(seed, min(n, 20_000), users)
    await projector_bench.produce(bootstrap, topic, n, users, seed)
    total = n  # one offset per record (Tansu's end offsets are unreliable after batched produce)
    with scratch_database() as url:
        dsn = url.replace("+psycopg", "")
        env = projector_bench.herald_env(bootstrap, prefix, url, f"capacity-{seed}")
        with projector_bench.process([sys.executable, "-m", "herald.cli", "projector"], env) as proc:
            deadline = time.monotonic() + PROJECT_DEADLINE_SECONDS
            while projector_bench.stored(dsn, topic) < total:
                if proc.poll() is not None:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    raise RuntimeError(f"herald projector exited {proc.returncode}: {out[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"projector did not reach {total} events in {PROJECT_DEADLINE_SECONDS:.0f} s")
                await asyncio.sleep(0.2)
        notifications, applied, sizes = _table_sizes(dsn)
    return {
        "events": total,
        "notifications": notifications,
        "applied": applied,
        "record_bytes_per_event": record_bytes / n,
        "gzip_ratio": ratio,
        "sizes": sizes,
        "pg_bytes_per_notification": sum(sizes.values()) / max(notifications, 1),
    }


async def main(args: argparse.Namespace) -> None:
    _, hard = ws_bench.raise_nofile()
    sizes = [min(int(n), hard - 500) for n in args.connections.split(",") if n]
    print(f"open-file limit {hard}; connections measured: {sizes}; client processes: {args.procs}")
    async with broker() as bootstrap:
        if sizes:
            with scratch_database() as database_url:
                print("\n## Gateway: one `herald api` process and its own Redis, idle connections")
                print(
                    f"{'connections':>11} {'failed':>6} {'conn/s':>7} {'RSS before':>11} {'RSS after':>10}"
                    f" {'RSS KiB/conn':>12} {'Redis B/conn':>12}"
                    f" {'idle CPU us/conn/s: gateway':>28} {'Redis':>6} {'failed leaves':>13}"
                )
                for n in sizes:
                    r = await gateway(n, args.procs, bootstrap, database_url, args.idle_seconds)
                    print(
                        f"{r['connected']:>11} {r['failed']:>6} {r['connect_per_s']:>7.0f}"
                        f" {r['rss_before_mib']:>7.1f} MiB {r['rss_after_mib']:>6.1f} MiB"
                        f" {r['rss_kib_per_conn']:>12.1f} {r['redis_bytes_per_conn']:>12.0f}"
                        f" {r['idle_gateway_cpu_us_per_conn_s']:>28.2f} {r['idle_redis_cpu_us_per_conn_s']:>6.2f}"
                        f" {r['leave_failures']:>13}"
                    )
        if args.acceptances:
            print(f"\n## Admission state: {args.acceptances} acceptances over {args.users} users in the dedupe window")
            a = admission_state(args.acceptances, args.users)
            print(
                f"table entries {a['entries']}; {a['bytes_per_acceptance']:.0f} B of worker memory per acceptance"
                f" ({a['bytes_per_entry']:.0f} B per entry); rebuild after a rebalance {a['rebuild_seconds']:.2f} s"
                f" ({a['rebuild_us_per_entry']:.2f} us per entry)"
            )
        if args.events:
            print(f"\n## Storage: {args.events} events over {args.users} users projected into Postgres")
            s = await storage(bootstrap, args.events, args.users)
            print(
                f"events {s['events']}, notifications {s['notifications']}, ledger rows {s['applied']};"
                f" event record {s['record_bytes_per_event']:.0f} B (key + value),"
                f" {s['gzip_ratio']:.1f}x smaller with gzip in batches of 100"
            )
            for table, size in s["sizes"].items():
                per = size / max(s["notifications"], 1)
                print(f"  {table:24} {size / 2**20:8.1f} MiB {per:8.0f} B per notification")
            print(f"Postgres in all: {s['pg_bytes_per_notification']:.0f} B per notification")


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", default="2000,10000", help="comma-separated idle connection counts")
    parser.add_argument("--procs", type=int, default=4, help="client processes")
    parser.add_argument(
        "--idle-seconds", type=float, default=30.0, help="idle window for the upkeep CPU (>= one heartbeat interval)"
    )
    parser.add_argument("--events", type=int, default=100_000, help="events projected for the storage figures")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--acceptances", type=int, default=200_000, help="requests admitted for the admission state")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(_args()))
