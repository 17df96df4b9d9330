"""Pipeline throughput and latency: request on Kafka -> ingest -> event log -> router ->
WebSocket sink -> Redis pub/sub -> gateway -> WebSocket client, with the projector
writing Postgres at the same time.

Baseline, same run, same broker: a raw aiokafka consume->produce loop (one hop) between
two topics with the same partition count and record sizes, measured the same way
(publish time -> time the final consumer sees the record).

    uv run python benchmarks/pipeline.py [--n 2000] [--users 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.auth import mint_token
from benchmarks.common import bench_settings, broker, scratch_database, summary
from herald.stack import run_stack


def _request(user: str, i: int) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "type": "notification.requested",
            "id": str(uuid.uuid4()),
            "source": "bench",
            "data": {"user_id": user, "title": f"Benchmark {i}", "body": "x" * 200, "data": {"i": i}},
        }
    ).encode()


async def run_pipeline(bootstrap: str, database_url: str, n: int, users: int) -> tuple[float, list[float]]:
    settings = bench_settings(bootstrap, database_url, redis_url="redis://127.0.0.1:6379/14")
    names = [f"user{u}" for u in range(users)]
    async with run_stack(settings) as stack, aiohttp.ClientSession() as http:
        base = f"ws://127.0.0.1:{stack.http_port}/ws/notifications?token="
        sockets = [await http.ws_connect(base + mint_token(settings, name)) for name in names]
        for ws in sockets:  # presence is registered once a ping round trip completed
            await ws.send_json({"type": "ping"})
            await ws.receive()
        sent: dict[str, float] = {}
        latencies: list[float] = []
        done = asyncio.Event()

        async def reader(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for msg in ws:
                frame = json.loads(msg.data)
                if frame.get("type") != "notification":
                    continue
                latencies.append((time.monotonic() - sent[frame["notification"]["id"]]) * 1000)
                if len(latencies) >= n:
                    done.set()

        readers = [asyncio.create_task(reader(ws)) for ws in sockets]
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        await producer.start()
        assert stack.topics is not None  # started
        topic = stack.topics.names.request("high")
        started = time.monotonic()
        for i in range(n):
            user = names[i % users]
            value = _request(user, i)
            sent[json.loads(value)["id"]] = time.monotonic()
            await producer.send(topic, key=user.encode(), value=value)
        await producer.flush()
        try:
            await asyncio.wait_for(done.wait(), timeout=300)
        except TimeoutError:
            raise SystemExit(f"pipeline stalled: {len(latencies)} of {n} frames received after 300 s") from None
        elapsed = time.monotonic() - started
        await producer.stop()
        for task in readers:
            task.cancel()
        for ws in sockets:
            await ws.close()
        return n / elapsed, latencies


async def run_baseline(bootstrap: str, n: int, partitions: int = 4) -> tuple[float, list[float]]:
    tag = uuid.uuid4().hex[:6]
    source, sink = f"base{tag}.in", f"base{tag}.out"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(source, partitions, 1), NewTopic(sink, partitions, 1)])
    await admin.close()
    loop_consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=f"base{tag}",
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        rebalance_timeout_ms=6000,
    )
    loop_producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    final = AIOKafkaConsumer(
        sink,
        bootstrap_servers=bootstrap,
        group_id=f"final{tag}",
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        rebalance_timeout_ms=6000,
    )
    for client in (loop_consumer, loop_producer, final):
        await client.start()
    while not loop_consumer.assignment() or not final.assignment():  # group joins happen before timing
        await asyncio.sleep(0.05)
        await asyncio.gather(loop_consumer.getmany(timeout_ms=10), final.getmany(timeout_ms=10))

    async def relay() -> None:
        while True:
            batches = await loop_consumer.getmany(timeout_ms=100)
            for records in batches.values():
                futures = [await loop_producer.send(sink, key=r.key, value=r.value) for r in records]
                await asyncio.gather(*futures)
            await loop_consumer.commit()

    relay_task = asyncio.create_task(relay())
    sent: dict[str, float] = {}
    latencies: list[float] = []
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    started = time.monotonic()
    for i in range(n):
        user = f"user{i % 50}"
        value = _request(user, i)
        sent[json.loads(value)["id"]] = time.monotonic()
        await producer.send(source, key=user.encode(), value=value)
    await producer.flush()
    while len(latencies) < n:
        batches = await final.getmany(timeout_ms=200)
        now = time.monotonic()
        for records in batches.values():
            latencies.extend((now - sent[json.loads(r.value)["id"]]) * 1000 for r in records)
    elapsed = time.monotonic() - started
    relay_task.cancel()
    for client in (producer, loop_producer):
        await client.stop()
    for consumer in (loop_consumer, final):
        await consumer.stop()
    return n / elapsed, latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="notifications per round")
    parser.add_argument("--users", type=int, default=50, help="connected users (one WebSocket each)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pipeline_rates, baseline_rates = [], []
    async with broker() as bootstrap:
        for r in range(args.rounds):
            rate, lat = await run_baseline(bootstrap, args.n)
            baseline_rates.append(rate)
            print(f"round {r + 1} baseline  aiokafka consume->produce: {rate:8.0f} msg/s  {summary(lat)}", flush=True)
            with scratch_database() as db:
                rate, lat = await run_pipeline(bootstrap, db, args.n, args.users)
            pipeline_rates.append(rate)
            print(f"round {r + 1} pipeline  Kafka -> WebSocket:         {rate:8.0f} msg/s  {summary(lat)}", flush=True)
    p, b = statistics.median(pipeline_rates), statistics.median(baseline_rates)
    print(f"\nmedian of {args.rounds} rounds, n={args.n}, users={args.users}")
    print(f"  baseline (raw aiokafka, 1 hop): {b:8.0f} msg/s")
    print(f"  herald pipeline (3 hops + projector + Redis fan-out): {p:8.0f} msg/s")
    print(f"  ratio pipeline / baseline: {p / b:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
