"""REST API and projector benchmark.

1. Read latency with 1,000,000 notifications in Postgres (10,000 users x 100, inserted
   set-based with COPY, with their channel rows, stat counters and user stats rows): median and p99 of
   a filtered list page of 50 items, of the next page (keyset cursor), of a user's stats
   and of global stats, each over HTTP against the real aiohttp app.
2. Projector throughput: N real events (accepted + delivery outcome) on the broker,
   consumed raw with aiokafka and projected by ``Projector.catch_up`` in the same run.

    uv run python -m benchmarks.api [--rows 1000000] [--events 100000] [--requests 400]

Uses its own scratch database (dropped at the end) and a fresh Tansu unless
``HERALD_BENCH_KAFKA`` names a broker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import aiohttp
import psycopg
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from api.auth import SCOPE_ADMIN, TokenVerifier, mint_token
from api.problems import problem_middleware
from api.rest.routes import register_rest
from benchmarks.common import bench_settings, broker, percentile, scratch_database
from engine.settings import Settings
from engine.topics import TopicNames
from projections import stats
from projections.database import create_engine, migrate
from projections.models import USER_COUNTERS
from projections.projector import Projector
from projections.queries import NotificationQueries
from schemas.codec import decode, encode
from schemas.envelope import Envelope
from schemas.events import DeliveryDeferred, DeliverySucceeded, NotificationAccepted
from schemas.ids import derived_id

USERS = 10_000
T0 = datetime(2025, 1, 1, tzinfo=UTC)
PRIORITIES = ("high", "medium", "low")
STATUSES = (("delivered", 0.7), ("pending", 0.2), ("failed", 0.1))


def _sync_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def load_rows(url: str, rows: int) -> float:
    """COPY ``rows`` notifications, their channel rows and stat counters; return seconds taken."""
    rng = random.Random(7)
    counters: Counter[tuple[str, str, str]] = Counter()
    started = time.perf_counter()
    with psycopg.connect(_sync_url(url)) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY notifications (id, user_id, title, body, priority, channels, channel_mask, category, data, status,"
            " attempts, created_at, delivered_at, read_at) FROM STDIN"
        ) as copy:
            for i in range(rows):
                user = f"user-{i % USERS}"
                priority = PRIORITIES[rng.randrange(3)]
                status = rng.choices([s for s, _ in STATUSES], [w for _, w in STATUSES])[0]
                created = T0 + timedelta(seconds=i * 2)
                read = created + timedelta(minutes=5) if rng.random() < 0.5 else None
                delivered = created + timedelta(milliseconds=rng.randint(5, 500)) if status == "delivered" else None
                copy.write_row(
                    (
                        f"n-{i:08d}",
                        user,
                        f"Title {i}",
                        "body text",
                        priority,
                        '["websocket"]',
                        1,
                        "bench",
                        "{}",
                        status,
                        1,
                        created,
                        delivered,
                        read,
                    )
                )
                for scope in (stats.user_scope(user), stats.partition_scope(i % 4)):
                    counters[(scope, "total", "")] += 1
                    counters[(scope, "status", status)] += 1
                    counters[(scope, "priority", priority)] += 1
                    state = {"delivered": "delivered", "pending": "deferred", "failed": "abandoned"}[status]
                    counters[(scope, "channel", f"websocket.{state}")] += 1
                    if read is None:
                        counters[(scope, "unread", "")] += 1
                    if delivered is not None:
                        latency = (delivered - created).total_seconds() * 1000
                        counters[(scope, "latency", str(stats.latency_bucket(latency)))] += 1
        with cur.copy(
            "COPY notification_channels (notification_id, channel, state, attempts, updated_at) FROM STDIN"
        ) as copy:
            for i in range(rows):
                copy.write_row((f"n-{i:08d}", "websocket", "delivered", 1, T0))
        # A user's counters with a user_stats column go there, as the projector writes them.
        split = stats.Deltas()
        for (scope, metric, key), n in counters.items():
            position = stats.USER_COLUMNS.get((metric, key)) if scope.startswith("u:") else None
            if position is None:
                split.counters[(scope, metric, key)] = n
            else:
                split.users[(scope.removeprefix("u:"), position)] = n
        with cur.copy("COPY stat_counters (scope, metric, key, count) FROM STDIN") as copy:
            for row in split.counter_rows():
                copy.write_row(row)
        columns = ", ".join(name for name, _, _ in USER_COUNTERS)
        with cur.copy(f"COPY user_stats (user_id, {columns}) FROM STDIN") as copy:
            for row in split.user_rows():
                copy.write_row(row)
        conn.commit()
    with psycopg.connect(_sync_url(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


async def serve(settings: Settings, queries: NotificationQueries) -> tuple[web.AppRunner, str]:
    app = web.Application(middlewares=[problem_middleware])
    register_rest(app, verifier=TokenVerifier(settings), queries=queries, publisher=None, settings=settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def timed(http: aiohttp.ClientSession, url: str, token: str, n: int, make_path: object) -> list[float]:
    out = []
    headers = {"Authorization": f"Bearer {token}"}
    for i in range(n):
        path = make_path(i)  # type: ignore[operator]
        started = time.perf_counter()
        async with http.get(url + path, headers=headers) as resp:
            body = await resp.read()
            assert resp.status == 200, (path, resp.status, body[:200])
        out.append((time.perf_counter() - started) * 1000)
    return out


async def read_latency(settings: Settings, n: int) -> dict[str, list[float]]:
    engine = create_engine(settings.database_url)
    queries = NotificationQueries(engine)
    runner, url = await serve(settings, queries)
    admin = mint_token(settings, "ops", scopes=(SCOPE_ADMIN,))
    rng = random.Random(3)
    results: dict[str, list[float]] = {}
    try:
        async with aiohttp.ClientSession() as http:
            # Warm-up: connection pools, plans.
            await timed(http, url, admin, 20, lambda i: f"/api/notifications?user_id=user-{i}&limit=50")
            page_one = "/api/notifications?user_id=user-{u}&priority=high,medium&channel=websocket&limit=50"
            results["list: filtered page of 50 (priority, channel)"] = await timed(
                http, url, admin, n, lambda i: page_one.format(u=rng.randrange(USERS))
            )
            first = "/api/notifications?user_id=user-1&limit=50"
            async with http.get(url + first, headers={"Authorization": f"Bearer {admin}"}) as resp:
                body = await resp.json()
            if body["next"] is None:  # a small --rows run: fewer than 50 per user
                async with http.get(
                    url + first.replace("50", "1"), headers={"Authorization": f"Bearer {admin}"}
                ) as resp:
                    body = await resp.json()
            results["list: status filter, 50 per page"] = await timed(
                http,
                url,
                admin,
                n,
                lambda i: f"/api/notifications?user_id=user-{rng.randrange(USERS)}&status=delivered&limit=50",
            )
            cursor_page = body["next"]
            results["list: next page by cursor"] = await timed(http, url, admin, n, lambda i: cursor_page)
            results["stats: one user"] = await timed(
                http, url, admin, n, lambda i: f"/api/notifications/stats?user_id=user-{rng.randrange(USERS)}"
            )
            results["stats: global (all rows)"] = await timed(
                http, url, admin, n, lambda i: "/api/notifications/stats?global=true"
            )
            async with http.get(
                url + "/api/notifications/stats?global=true", headers={"Authorization": f"Bearer {admin}"}
            ) as resp:
                total = (await resp.json())["total"]
            print(f"  global stats report total={total}")
    finally:
        await runner.cleanup()
        await engine.dispose()
    return results


def make_events(prefix: str, n: int) -> list[Envelope]:
    """``n`` events: half ``notification.accepted``, half a delivery outcome for it."""
    out = []
    now = datetime.now(UTC)
    for i in range(n // 2):
        user = f"user-{i % 5000}"
        nid = derived_id(prefix, str(i))
        accepted = NotificationAccepted(
            notification_id=nid,
            user_id=user,
            title=f"t{i}",
            body="b",
            priority=PRIORITIES[i % 3],
            channels=("websocket",),
            category="",
            data={},
            requested_at=now,
        )
        outcome: DeliverySucceeded | DeliveryDeferred
        if i % 4:
            outcome = DeliverySucceeded(
                notification_id=nid, user_id=user, channel="websocket", target="node", latency_ms=float(i % 200)
            )
        else:
            outcome = DeliveryDeferred(notification_id=nid, user_id=user, channel="websocket", reason="offline")
        for k, event in enumerate((accepted, outcome)):
            out.append(
                Envelope(id=derived_id(nid, str(k)), source="bench", time=now, data=event, subject=nid, userid=user)
            )
    return out


async def produce(bootstrap: str, topic: str, envelopes: list[Envelope]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=(e.userid or "").encode(), value=encode(e)) for e in envelopes]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def raw_consume(bootstrap: str, topic: str, n: int, *, decode_too: bool) -> float:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(4)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        started = time.perf_counter()
        while seen < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            for records in batches.values():
                if decode_too:
                    for r in records:
                        decode(r.value, list(r.headers or ()))
                seen += len(records)
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def projector_rate(settings: Settings, n: int) -> float:
    """Events/s of the production projector (consumer group) from its first applied batch to the last."""
    engine = create_engine(settings.database_url)
    stopping = asyncio.Event()
    try:
        await migrate(engine)
        projector = Projector(settings, engine)
        task = asyncio.create_task(projector.run(stopping))
        # Polling the projector's counter; the group join is not projection work: time after it.
        while projector.applied == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        first, started = projector.applied, time.perf_counter()
        while projector.applied < n:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        rate = (n - first) / (time.perf_counter() - started)
        stopping.set()
        await task
        return rate
    finally:
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()

    print(f"== Read latency with {args.rows:,} notifications in Postgres ==")
    with scratch_database() as url:
        settings = bench_settings("127.0.0.1:1", url)
        engine = create_engine(url)
        await migrate(engine)
        await engine.dispose()
        seconds = load_rows(url, args.rows)
        print(f"  loaded {args.rows:,} rows (+ channel rows, counters) with COPY in {seconds:.1f} s")
        results = await read_latency(settings, args.requests)
    for name, values in results.items():
        print(f"  {name:<48} median {statistics.median(values):6.2f} ms   p99 {percentile(values, 99):6.2f} ms")

    print(f"\n== Projector throughput, {args.events:,} events, same run ==")
    async with broker() as bootstrap:
        with scratch_database() as url:
            settings = bench_settings(bootstrap, url)
            topic = TopicNames(settings.topic_prefix).events
            await produce(bootstrap, topic, make_events(settings.topic_prefix, args.events))
            raw = await raw_consume(bootstrap, topic, args.events, decode_too=False)
            decoded = await raw_consume(bootstrap, topic, args.events, decode_too=True)
            projected = await projector_rate(settings, args.events)
    print(f"  raw aiokafka consume           {raw:10,.0f} events/s")
    print(f"  consume + decode/validate      {decoded:10,.0f} events/s")
    print(f"  projector (Postgres, batches)  {projected:10,.0f} events/s   ({projected / raw:.1%} of raw consume)")
    print(
        json.dumps(
            {
                "read_ms": {k: {"median": statistics.median(v), "p99": percentile(v, 99)} for k, v in results.items()},
                "events_per_s": {"raw": raw, "decoded": decoded, "projector": projected},
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
