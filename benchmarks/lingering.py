"""What ``streams.lingering`` buys a live frame: send -> acknowledgement of one producer, with and without it.

A live frame waits for its acceptance's append to be acknowledged; the worker's producer holds a
new batch back for its linger. One aiokafka producer with the worker's linger sends records keyed
over ``--users`` users at ``--rate`` per second, each awaited by its own task as the live dispatch
awaits an acceptance; with ``push`` every send is followed by ``send_lingering`` as
``LiveDispatch.submit`` does. The two modes alternate on one fresh broker; per round: p50 / p99
of send -> ack, and the broker's CPU per record (smaller batches cost the broker more).

    uv run python -m benchmarks.lingering [--rate 500] [--records 3000] [--linger 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from benchmarks.common import broker, percentile
from benchmarks.throughput import _child_named, cpu_seconds
from streams.lingering import send_lingering


async def run(bootstrap: str, topic: str, args: argparse.Namespace, *, push: bool) -> list[float]:
    """Send -> ack milliseconds of each record after the first tenth (warm-up)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=args.linger)
    await producer.start()
    latencies: list[float] = []

    async def one(i: int) -> None:
        started = time.monotonic()
        acked = await producer.send(topic, b"x" * 600, key=b"u%d" % (i % args.users))
        if push:
            send_lingering(producer)
        await acked
        latencies.append((time.monotonic() - started) * 1000)

    tasks = []
    start = time.monotonic()
    try:
        for i in range(args.records):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(max(0.0, start + (i + 1) / args.rate - time.monotonic()))
        await asyncio.gather(*tasks)
    finally:
        await producer.stop()
    return latencies[args.records // 10 :]


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=500.0, help="records per second")
    p.add_argument("--records", type=int, default=3000, help="records per mode and round")
    p.add_argument("--linger", type=int, default=5, help="producer linger (ms), as benchmarks.throughput's")
    p.add_argument("--users", type=int, default=200, help="distinct keys")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    async with broker() as bootstrap:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic("lingering", args.partitions, 1)])
        await admin.close()
        tansu = _child_named("tansu")  # None with HERALD_BENCH_KAFKA: no broker CPU then
        for r in range(args.rounds):
            for push in (False, True):
                before = cpu_seconds(tansu) if tansu is not None else 0.0
                latencies = await run(bootstrap, "lingering", args, push=push)
                cpu = f"{(cpu_seconds(tansu) - before) * 1000 / args.records:.3f}" if tansu is not None else "?"
                mode = "push  " if push else "linger"
                print(
                    f"round {r + 1} {mode}: send -> ack p50 {percentile(latencies, 50):6.2f} "
                    f"p99 {percentile(latencies, 99):7.2f} ms; broker CPU {cpu} ms per record",
                    flush=True,
                )


if __name__ == "__main__":
    asyncio.run(main())
