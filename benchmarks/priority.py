"""Priority isolation: high-priority latency (publish -> ``notification.accepted`` in the
event log) with 20,000 low-priority requests queued, next to the same figure with no
backlog, measured in the same run against the same worker.

The worker runs as its own process (``herald worker``), as in production, so the
benchmark's producer and consumer do not share its event loop. High requests are
published one at a time at a fixed interval; latency is the time from the send call
to the moment a consumer of the event log sees the request's acceptance.

    uv run python -m benchmarks.priority [--high 200] [--low 20000] [--interval-ms 20] [--without-gate]
        [--split | --split-only] [--low-nice N] [--runs 5]

``--without-gate`` repeats the loaded phase on a worker with ``HERALD_PRIORITY_ISOLATION=false``.
``--split`` also measures high ingest in a worker process of its own (``herald worker --priorities
high`` beside ``--priorities medium,low``), interleaved with the one-process runs.
``--runs 5`` is issue 9's target 6: five runs, each on a fresh broker and a fresh worker, and
how many of them kept the loaded p99 within 2x of the idle p99 (``summary_rows()`` for ``make bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from benchmarks.common import EVENT_LOG_FETCH_INTERVAL_MS, TESTS_FETCH_WAIT_MS, Row, bench_settings, broker, percentile
from benchmarks.roles import Role, bench_secret, role
from benchmarks.throughput import cpu_seconds
from engine.settings import Settings
from engine.topics import TopicNames
from streams.admin import ensure_topics

LOW_WORKER_NICE = 10
"""The medium and low worker's ``HERALD_WORKER_NICE`` in the split: docs/deployment.md's recommendation for
processes sharing a host (compose gives its containers the like CPU weight, ``cpu_shares: 128``)."""
REDIS = os.environ.get("HERALD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
ROOT = Path(__file__).resolve().parent.parent


def _request(user: str, title: str) -> bytes:
    body = {
        "specversion": "1.0",
        "type": "notification.requested",
        "id": str(uuid.uuid4()),
        "source": "bench",
        "data": {"user_id": user, "title": title, "body": "x" * 200},
    }
    return json.dumps(body).encode()


@contextlib.asynccontextmanager
async def worker(
    settings: Settings, *, split: bool = False, high_nice: int = 0, high_poll: int = 0, low_nice: int = 0
) -> AsyncIterator[list[Role]]:
    """``herald worker`` in its own process (its log in ``test-output/bench-logs/worker-priority.log``).

    ``split``: two processes instead, one ingesting high (``--priorities high``), the other
    medium and low with the sinks (logs ``worker-priority-high.log``, ``worker-priority-medium-low.log``).
    ``high_nice``: the niceness of the process that ingests high (the one worker, or the high one);
    ``high_poll``: its ``HERALD_KAFKA_MAX_POLL_RECORDS`` (0: the setting's); ``low_nice``: the
    medium and low process's ``HERALD_WORKER_NICE`` when split (the process lowers its own priority).
    """
    ingests_high = settings.replace(kafka_max_poll_records=high_poll) if high_poll else settings
    if not split:
        async with role("worker", ingests_high, tag="-priority", nice=high_nice) as one:
            yield [one]
        return
    high = ingests_high.replace(worker_priorities="high")
    rest = settings.replace(worker_priorities="medium,low", worker_nice=low_nice)
    async with (
        role("worker", high, tag="-priority-high", nice=high_nice) as first,
        role("worker", rest, tag="-priority-medium-low") as second,
    ):
        yield [first, second]


class Log:
    """Tails the event log: when each high request was accepted, how many low ones so far."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5)
        self.bootstrap = bootstrap
        self.topic = topic
        self.accepted_at: dict[str, float] = {}
        self.decided_at: dict[str, float] = {}
        """Wall-clock time the worker made the decision (the event's ``time``)."""
        self.low_accepted = 0
        self.to_decision: dict[str, list[float]] = {}
        """Per phase: publish -> the worker's decision (ms), the ingest share of the latency."""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        partitions = self.consumer.partitions_for_topic(self.topic) or set()
        while not partitions:
            await self.consumer.topics()
            await asyncio.sleep(0.1)
            partitions = self.consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in partitions]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=50)
            now = time.monotonic()
            for records in batch.values():
                for r in records:
                    if b'"type":"notification.accepted"' not in r.value:
                        continue
                    if r.key and r.key.startswith(b"lo-"):
                        self.low_accepted += 1
                    else:
                        env = json.loads(r.value)
                        self.accepted_at.setdefault(env["subject"], now)
                        decided = datetime.fromisoformat(env["time"].replace("Z", "+00:00")).timestamp()
                        self.decided_at.setdefault(env["subject"], decided)

    def check(self) -> None:
        """Raise what ended the tail, if it ended (a dead reader must not look like a stalled worker)."""
        if self._task is not None and self._task.done():
            self._task.result()
            raise RuntimeError("the event log tail stopped")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()


async def measure_high(
    producer: AIOKafkaProducer, log: Log, topic: str, n: int, interval: float, tag: str
) -> tuple[list[float], float]:
    """Publish ``n`` high requests ``interval`` apart; latencies (ms) and the phase's duration."""
    sent: dict[str, float] = {}
    wall: dict[str, float] = {}
    start = time.monotonic()
    for i in range(n):
        user = f"hi-{tag}-{i}"
        value = _request(user, f"high {i}")
        rid = json.loads(value)["id"]
        sent[rid] = time.monotonic()
        wall[rid] = time.time()
        await producer.send_and_wait(topic, value=value, key=user.encode())
        await asyncio.sleep(max(0.0, start + (i + 1) * interval - time.monotonic()))
    deadline = time.monotonic() + 30
    while any(rid not in log.accepted_at for rid in sent):
        log.check()
        if time.monotonic() > deadline:
            # Tansu can hand a tailing consumer a record before an earlier one is readable
            # (docs/architecture.md): a fresh reader tells a skip of the tail from a lost request.
            missing = {rid for rid in sent if rid not in log.accepted_at}
            found = await find_accepted(log.bootstrap, log.topic, missing)
            if len(found) < len(missing):
                raise RuntimeError(f"{len(missing) - len(found)} high requests not accepted after 30 s")
            print(f"  ({len(found)} acceptances skipped by the log tail, found by a fresh reader: left out)")
            for rid in found:
                sent.pop(rid)
                wall.pop(rid)
            break
        await asyncio.sleep(0.05)
    log.to_decision[tag] = [(log.decided_at[rid] - t) * 1000 for rid, t in wall.items()]
    return [(log.accepted_at[rid] - t) * 1000 for rid, t in sent.items()], time.monotonic() - start


async def publish_low(bootstrap: str, topic: str, count: int, tag: str) -> float:
    """Queue ``count`` low requests (20 per user: all within the default limit); seconds taken."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    start = time.monotonic()
    try:
        futures = []
        for i in range(count):
            user = f"lo-{tag}-{i // 20}"
            futures.append(await producer.send(topic, value=_request(user, f"low {i}"), key=user.encode()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.monotonic() - start


async def find_accepted(bootstrap: str, topic: str, ids: set[str]) -> set[str]:
    """Which of the requests ``ids`` have a ``notification.accepted`` on the log, read from start to end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: set[str] = set()
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + 60
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]] and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    if b'"type":"notification.accepted"' in r.value and not (r.key and r.key.startswith(b"lo-")):
                        subject = json.loads(r.value)["subject"]
                        if subject in ids:
                            found.add(subject)
        return found
    finally:
        await consumer.stop()


async def count_low_accepted(bootstrap: str, topic: str) -> int:
    """The low requests' ``notification.accepted`` on the log, read by a new consumer from start to end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()]
        if not tps:
            await consumer.topics()
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        count = 0
        deadline = time.monotonic() + 120
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]] and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                count += sum(
                    1
                    for r in records
                    if r.key and r.key.startswith(b"lo-") and b'"type":"notification.accepted"' in r.value
                )
        return count
    finally:
        await consumer.stop()


def _line(name: str, latencies: list[float]) -> str:
    return (
        f"{name:<44} p50 {percentile(latencies, 50):7.1f} ms   p90 {percentile(latencies, 90):7.1f} ms"
        f"   p99 {percentile(latencies, 99):7.1f} ms   max {max(latencies):7.1f} ms"
    )


def _loadavg() -> float:
    """The 1-minute load average (Linux ``/proc``)."""
    return float(Path("/proc/loadavg").read_text().split()[0])


async def run(args: argparse.Namespace, bootstrap: str, gate: bool, *, split: bool = False) -> dict[str, object]:
    settings = bench_settings(
        bootstrap,
        "sqlite+aiosqlite:///:memory:",
        redis_url=REDIS,
        jwt_secret=bench_secret(),
        priority_isolation=gate,
        producer_max_batch_size=args.producer_batch_bytes,
        kafka_fetch_max_wait_ms=args.fetch_wait,
        kafka_event_log_fetch_interval_ms=args.event_log_fetch_interval,
    )
    names = TopicNames(settings.topic_prefix)
    await ensure_topics(settings)
    log = Log(bootstrap, names.events)
    await log.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        async with worker(
            settings, split=split, high_nice=args.high_nice, high_poll=args.high_poll, low_nice=args.low_nice
        ) as workers:
            await measure_high(producer, log, names.request("high"), 20, args.interval_ms / 1000, "warm")
            # Low warmed up too (in the split, the other process): no start-up in the measured phases.
            await publish_low(bootstrap, names.request("low"), 1, "warm")
            while log.low_accepted < 1:
                log.check()
                await asyncio.sleep(0.05)
            log.low_accepted = 0
            load_before = _loadavg()
            cpu_before = [cpu_seconds(w.pid) for w in workers]
            interval = args.interval_ms / 1000
            marks = [(time.monotonic(), [cpu_seconds(w.pid) for w in workers])]
            unloaded, _ = await measure_high(producer, log, names.request("high"), args.high, interval, "a")
            marks.append((time.monotonic(), [cpu_seconds(w.pid) for w in workers]))
            queue_seconds = await publish_low(bootstrap, names.request("low"), args.low, "x")
            marks.append((time.monotonic(), [cpu_seconds(w.pid) for w in workers]))
            backlog_start = args.low - log.low_accepted
            loaded, phase = await measure_high(producer, log, names.request("high"), args.high, interval, "b")
            marks.append((time.monotonic(), [cpu_seconds(w.pid) for w in workers]))
            backlog_end = args.low - log.low_accepted
            drain_start = last_change = time.monotonic()
            last_count = log.low_accepted
            # Polling a counter the log tail updates; a count that stops moving for 60 s ends
            # the wait (reported as a stall: the latencies above stand on their own).
            while log.low_accepted < args.low and time.monotonic() - last_change < 60:
                log.check()
                if log.low_accepted != last_count:
                    last_count, last_change = log.low_accepted, time.monotonic()
                await asyncio.sleep(0.2)
            done = log.low_accepted >= args.low
            drained = time.monotonic() - drain_start + phase if done else float("nan")
            # A stall: the worker, or the long-lived reader (seen before)? A fresh reader counts again.
            recounted = None if done else await count_low_accepted(bootstrap, names.events)
            cpu = [cpu_seconds(w.pid) - before for w, before in zip(workers, cpu_before, strict=True)]
            # Cores each worker process used in the idle phase and in the loaded phase.
            busy = [
                [(after[i] - before[i]) / (t1 - t0) for i in range(len(workers))]
                for (t0, before), (t1, after) in ((marks[0], marks[1]), (marks[2], marks[3]))
            ]
            load_after = _loadavg()
    finally:
        await producer.stop()
        await log.stop()
    return {
        "gate": gate,
        "split": split,
        "load": (load_before, load_after),
        "cpu_ms_per_request": [c * 1000 / (2 * args.high + args.low) for c in cpu],
        "cores": busy,
        "unloaded": unloaded,
        "loaded": loaded,
        "queue_seconds": queue_seconds,
        "backlog_start": backlog_start,
        "backlog_end": backlog_end,
        "low_done_after": drained,
        "low_accepted": log.low_accepted,
        "low_recounted": recounted,
        "decision_unloaded": log.to_decision["a"],
        "decision_loaded": log.to_decision["b"],
    }


def report(args: argparse.Namespace, result: dict[str, object]) -> None:
    unloaded, loaded = result["unloaded"], result["loaded"]
    assert isinstance(unloaded, list)
    assert isinstance(loaded, list)
    gate = "on" if result["gate"] else "off"
    mode = (
        f"two worker processes (high | medium+low at HERALD_WORKER_NICE={args.low_nice})"
        if result["split"]
        else "one worker process"
    )
    if args.high_nice:
        mode += f", the one ingesting high at nice {args.high_nice:+d}"
    if args.high_poll:
        mode += f", the one ingesting high polling at most {args.high_poll} records"
    print(f"\npriority isolation {gate}, {mode}: {args.high} high requests, one every {args.interval_ms} ms, per phase")
    cpu = result["cpu_ms_per_request"]
    load = result["load"]
    assert isinstance(cpu, list)
    assert isinstance(load, tuple)
    print(
        f"  worker CPU per request (both phases and the backlog): {' + '.join(f'{c:.3f}' for c in cpu)} ms;"
        f" load average {load[0]:.2f} -> {load[1]:.2f}"
    )
    cores = result["cores"]
    assert isinstance(cores, list)
    print(
        "  cores used per worker process: idle phase "
        + " + ".join(f"{c:.2f}" for c in cores[0])
        + ", loaded phase "
        + " + ".join(f"{c:.2f}" for c in cores[1])
    )
    print(_line("high, no backlog", unloaded))
    print(_line(f"high, {args.low:,} low queued", loaded))
    done_after = result["low_done_after"]
    assert isinstance(done_after, float)
    drained = (
        f"the low backlog was done {done_after:.1f} s after the phase began"
        if not math.isnan(done_after)
        else "the count of low acceptances read stopped moving for 60 s before reaching the total;"
        f" a fresh reader of the log counts {result['low_recounted']:,}"
    )
    print(
        f"  low backlog: {result['low_accepted']:,} accepted in all; {result['backlog_start']:,} still queued when the "
        f"loaded phase began, {result['backlog_end']:,} when it ended "
        f"(publishing took {result['queue_seconds']:.1f} s; {drained})"
    )
    for phase in ("unloaded", "loaded"):
        share = result[f"decision_{phase}"]
        assert isinstance(share, list)
        print(_line(f"  of which publish -> decision, {phase}", share))
    ratio50 = percentile(loaded, 50) / percentile(unloaded, 50)
    ratio99 = percentile(loaded, 99) / percentile(unloaded, 99)
    verdict = "within" if ratio99 <= 2 else "NOT within"
    print(f"  ratio loaded/unloaded: p50 {ratio50:.2f}x, p99 {ratio99:.2f}x ({verdict} the 2x target)")


def _ratio99(result: dict[str, object]) -> float:
    unloaded, loaded = result["unloaded"], result["loaded"]
    assert isinstance(unloaded, list)
    assert isinstance(loaded, list)
    return percentile(loaded, 99) / percentile(unloaded, 99)


@dataclasses.dataclass
class Runs:
    """Issue 9 target 6: the measurement repeated, each run on a fresh broker and a fresh worker."""

    results: list[dict[str, object]]
    low: int
    """Low requests queued in each run."""
    split: bool = False
    """Whether high ingest ran in a worker process of its own."""
    low_nice: int = 0
    """The medium and low worker's ``HERALD_WORKER_NICE`` when split."""

    @property
    def ratios(self) -> list[float]:
        return [_ratio99(r) for r in self.results]

    @property
    def met(self) -> int:
        return sum(ratio <= 2 for ratio in self.ratios)

    def p99(self, phase: str) -> list[float]:
        values = [r[phase] for r in self.results]
        return [percentile(v, 99) for v in values if isinstance(v, list)]


async def measure_runs(args: argparse.Namespace, runs: int = 5) -> list[Runs]:
    """``runs`` times: a fresh broker and ``herald worker``, idle phase, 20,000 low queued, loaded phase.

    With ``args.split`` each run measures one worker process and then (or first, every other
    run) two, high in its own: the same conditions for both, interleaved.
    """
    modes = [True] if args.split_only else [False, True] if args.split else [False]
    results: dict[bool, list[dict[str, object]]] = {mode: [] for mode in modes}
    for n in range(runs):
        for split in modes if n % 2 == 0 else modes[::-1]:
            async with broker() as bootstrap:
                result = await run(args, bootstrap, gate=True, split=split)
            results[split].append(result)
            mode = "split" if split else "one process"
            print(f"run {n + 1} of {runs}, {mode}: p99 ratio loaded/idle {_ratio99(result):.2f}x", flush=True)
            report(args, result)
    return [Runs(results[mode], args.low, mode, args.low_nice if mode else 0) for mode in modes]


def rows(runs: Runs) -> list[Row]:
    """The summary row: measure, Herald, baseline, ratio, target."""
    count = len(runs.results)
    mode = f", high in its own worker process (medium+low at nice {runs.low_nice})" if runs.split else ""
    return [
        (
            f"priority: high p99 with {runs.low:,} low queued <= 2x idle p99 in >= 4 of 5 runs{mode}",
            f"{runs.met} of {count} runs met it; loaded p99 median {statistics.median(runs.p99('loaded')):.1f} ms",
            f"idle p99 median {statistics.median(runs.p99('unloaded')):.1f} ms",
            f"{statistics.median(runs.ratios):.2f}x (median of {count})",
            "<= 2x in >= 4 of 5 runs",
        )
    ]


async def summary_rows(args: argparse.Namespace) -> list[Row]:
    """The summary rows of ``--runs`` runs (5 without it) with ``args`` of ``parser()``, for ``make bench``."""
    return [row for runs in await measure_runs(args, args.runs or 5) for row in rows(runs)]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--high", type=int, default=200, help="high-priority requests per phase")
    parser.add_argument("--low", type=int, default=20_000, help="low-priority requests queued")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="gap between high requests")
    parser.add_argument("--without-gate", action="store_true", help="also run the loaded phase without isolation")
    parser.add_argument(
        "--producer-batch-bytes",
        type=int,
        default=16384,
        help="worker producer batch size (16384 = production; 1 = the Tansu workaround of the tests and herald dev)",
    )
    parser.add_argument(
        "--fetch-wait",
        type=int,
        default=TESTS_FETCH_WAIT_MS,
        metavar="MS",
        help="the workers' consumer fetch wait (HERALD_KAFKA_FETCH_MAX_WAIT_MS; default: the tests' Tansu setting)",
    )
    parser.add_argument(
        "--event-log-fetch-interval",
        type=int,
        default=EVENT_LOG_FETCH_INTERVAL_MS,
        metavar="MS",
        help="the workers' HERALD_KAFKA_EVENT_LOG_FETCH_INTERVAL_MS (default: the benchmarks' %(default)s)",
    )
    parser.add_argument(
        "--high-nice",
        type=int,
        default=0,
        help="niceness of the worker process that ingests high, in both modes (e.g. -5: more CPU weight)",
    )
    parser.add_argument(
        "--low-nice",
        type=int,
        default=LOW_WORKER_NICE,
        choices=range(20),
        metavar="N",
        help="split: HERALD_WORKER_NICE of the medium and low worker process (default %(default)s, as"
        " docs/deployment.md recommends on a shared host; 0: as high's)",
    )
    parser.add_argument(
        "--high-poll",
        type=int,
        default=0,
        help="HERALD_KAFKA_MAX_POLL_RECORDS of the worker process that ingests high, in both modes (0: default)",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="also run high ingest in a worker process of its own (herald worker --priorities high), interleaved",
    )
    parser.add_argument(
        "--split-only", action="store_true", help="measure only high ingest in a worker process of its own"
    )
    parser.add_argument(
        "--runs", type=int, default=0, help="repeat N times, each on a fresh broker and worker, and print the summary"
    )
    return parser


async def main() -> None:
    args = parser().parse_args()
    if args.runs:
        for runs in await measure_runs(args, args.runs):
            mode = "split" if runs.split else "one process"
            print(f"\n{mode}: p99 ratios loaded/idle per run: {', '.join(f'{r:.2f}x' for r in runs.ratios)}")
            for row in rows(runs):
                print(" | ".join(row))
        return
    async with broker() as bootstrap:
        report(args, await run(args, bootstrap, gate=True))
        if args.split or args.split_only:
            report(args, await run(args, bootstrap, gate=True, split=True))
        if args.without_gate:
            report(args, await run(args, bootstrap, gate=False))


if __name__ == "__main__":
    asyncio.run(main())
