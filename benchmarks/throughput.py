"""End-to-end throughput and latency with the roles as separate processes, next to a raw
aiokafka consume->produce loop on the same broker in the same run.

Herald: ``herald worker``, ``herald projector`` and ``herald api`` each in its own process,
real Postgres and Redis, the Tansu broker, producers batching as in production. One
WebSocket client per user is connected to the API. Two phases against the same processes:

- **steady**: requests published at a fixed rate (default 500/s); latency = publish ->
  the ``notification`` frame received by the user's WebSocket client;
- **burst**: N requests published as fast as the producer takes them; throughput = N /
  (first publish -> the later of: the N-th frame received, and N rows visible in Postgres).

Baseline: a raw aiokafka loop (consume a batch, produce it to a second topic, commit) between
two topics with Herald's partition count, fed and measured the same way (publish -> the
record seen by a consumer of the second topic), at the same steady rate and as a burst.

    uv run python -m benchmarks.throughput [--burst 20000] [--rate 500] [--seconds 10] [--users 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, cast

import aiohttp
import orjson
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from api.auth import mint_token
from benchmarks.common import (
    EVENT_LOG_FETCH_INTERVAL_MS,
    TESTS_FETCH_WAIT_MS,
    bench_settings,
    broker,
    percentile,
    scratch_database,
)
from benchmarks.roles import Role, bench_secret, role, wait_ready
from engine.settings import Settings
from herald.broker import free_port
from streams.admin import ensure_topics

REDIS = "redis://127.0.0.1:6379/14"
PRODUCER_LINGER_MS = 2
"""Every producer of the run, the benchmark's, Herald's roles' and the raw loop's: production's default
(``HERALD_PRODUCER_LINGER_MS``)."""
FETCH_WAIT_MS = 5
"""The fetch wait of the consumers on the measured path: the worker's, which reads the requests, and both
of the raw loop's. Kafka answers a fetch when data arrives, so there the wait adds nothing (production's
default is 500 ms); Tansu, under a steady load, holds a fetch that finds records for up to about half its
wait, so on the path the wait is a Tansu workaround of the benchmark, as the tests' 20 ms is of the tests.
``--fetch-wait`` sets it."""
OFF_PATH_FETCH_WAIT_MS = TESTS_FETCH_WAIT_MS
"""The fetch wait of the roles whose consumers are not on the frame's path (the projector, the api): the
tests' Tansu setting. ``--off-path-fetch-wait`` sets it."""
PROJECTOR_NICE = 10
"""The projector's niceness, as compose's ``cpu_shares: 128`` gives it in a deployment (HERALD_PROJECTOR_NICE):
off the frame's path, it gives way to the worker, the api and the broker while the two cores are busy.
``--projector-nice`` sets it (0: every role at the same priority, as before 6 December, afternoon)."""


@dataclass
class Phase:
    """One measured phase: send times by request id, receive times by request id."""

    sent: dict[str, float] = field(default_factory=dict)
    received: dict[str, float] = field(default_factory=dict)
    appended: dict[str, float] = field(default_factory=dict)
    """Request id -> when the broker acknowledged its produce (the publisher's future done; ``--stages``)."""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 0

    def see(self, rid: str, at: float) -> None:
        if rid in self.sent and rid not in self.received:
            self.received[rid] = at
            if len(self.received) >= self.expected:
                self.done.set()

    def latencies_ms(self) -> list[float]:
        return [(self.received[r] - t) * 1000 for r, t in self.sent.items() if r in self.received]


def request(user: str, title: str) -> tuple[str, bytes]:
    rid = str(uuid.uuid4())
    body = {
        "specversion": "1.0",
        "type": "notification.requested",
        "id": rid,
        "source": "bench",
        "data": {"user_id": user, "title": title, "body": "x" * 200, "data": {"n": 1}},
    }
    return rid, orjson.dumps(body)


async def publish(
    producer: AIOKafkaProducer, topic: str, users: list[str], phase: Phase, count: int, rate: float | None, tag: str
) -> None:
    """``count`` requests round-robin over ``users``; paced at ``rate``/s, or as fast as possible."""
    phase.expected = count
    futures = []
    start = time.monotonic()
    tick = 0.01
    for i in range(count):
        user = users[i % len(users)]
        rid, value = request(user, f"{tag} {i}")
        phase.sent[rid] = time.monotonic()
        future = await producer.send(topic, key=user.encode(), value=value)
        future.add_done_callback(lambda _, rid=rid: phase.appended.setdefault(rid, time.monotonic()))
        futures.append(future)
        if rate is not None and (i + 1) % max(1, int(rate * tick)) == 0:
            await asyncio.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
    await asyncio.gather(*futures)


async def wait_phase(phase: Phase, within: float, what: str) -> None:
    try:
        await asyncio.wait_for(phase.done.wait(), within)
    except TimeoutError:
        raise SystemExit(f"{what}: {len(phase.received)} of {phase.expected} seen after {within} s") from None


async def rows_visible(database_url: str, prefix: str, count: int, within: float) -> float:
    """Monotonic time at which ``count`` notifications titled ``prefix...`` are rows in Postgres."""
    dsn = database_url.replace("+psycopg", "")
    deadline = time.monotonic() + within
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while True:
            cur = await conn.execute("SELECT count(*) FROM notifications WHERE title LIKE %s", (prefix + "%",))
            row = await cur.fetchone()
            if row is not None and row[0] >= count:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise SystemExit(f"only {row[0] if row else 0} of {count} rows visible after {within} s")
            await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------- herald


async def run_herald(bootstrap: str, database_url: str, args: argparse.Namespace) -> tuple[list[float], float, float]:
    """(steady latencies ms, burst throughput /s, burst frames-only throughput /s)."""
    port = free_port()
    settings = bench_settings(
        bootstrap,
        database_url,
        redis_url=REDIS,
        jwt_secret=bench_secret(),
        http_port=port,
        producer_linger_ms=args.linger,
        kafka_fetch_max_wait_ms=args.fetch_wait,
        kafka_event_log_fetch_interval_ms=args.event_log_fetch_interval,
        # Enough room for the run's users (the limiter still runs on every request).
        rate_limit_high=args.limit,
        log_level="WARNING",
    )
    await ensure_topics(settings)
    off_path = settings.replace(kafka_fetch_max_wait_ms=args.off_path_fetch_wait)
    base = f"http://127.0.0.1:{port}"
    users = [f"u{i}" for i in range(args.users)]
    with tempfile.TemporaryDirectory(prefix="herald-stages-") as folder:
        stages = StageRun(Path(folder)) if args.stages else None
        if stages is not None:
            (stages.folder / "sitecustomize.py").write_text(SITECUSTOMIZE)

        def hooks(role_name: str) -> StageEnv:
            return stages.env(role_name) if stages is not None else {}

        async with (
            role(
                "projector", off_path, tag="-throughput", root=args.projector_tree, nice=args.projector_nice
            ) as projector,
            role(
                "worker",
                settings,
                tag="-throughput",
                root=args.worker_tree,
                cprofile=args.cprofile / "worker.prof" if args.cprofile else None,
                **hooks("worker"),
            ) as worker,
            role("api", off_path, tag="-throughput", root=args.api_tree, **api_env(args, hooks("api"))) as api,
        ):
            await wait_ready(base, api)
            return await _measure(settings, base, users, database_url, args, [worker, api, projector], stages)


API_PROFILE_ENV = "BENCH_API_PROFILE"
"""``--cprofile-api``: the file the api's CPU-time profile goes to."""
API_PROFILE_SITECUSTOMIZE = """\
import atexit, cProfile, os, time
_profile = cProfile.Profile(time.process_time)
_profile.enable()

def _dump():
    _profile.disable()
    _profile.dump_stats(os.environ["BENCH_API_PROFILE"])

atexit.register(_dump)
"""


def api_env(args: argparse.Namespace, stage_env: StageEnv) -> ApiEnv:
    """The api's extra environment: the stage hooks', or (``--cprofile-api``) a CPU-time profiler's."""
    if not args.cprofile_api:
        return cast(ApiEnv, stage_env)  # a StageEnv is an ApiEnv without the profile
    if stage_env:
        raise SystemExit("--cprofile-api and --stages both hook the api: use one of them")
    folder = args.cprofile_api / "api-sitecustomize"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(API_PROFILE_SITECUSTOMIZE)
    paths = [str(folder), str(args.api_tree or Path(__file__).resolve().parent.parent)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return ApiEnv(PYTHONPATH=os.pathsep.join(paths), BENCH_API_PROFILE=str(args.cprofile_api / "api.prof"))


async def start_profilers(roles: list[Role], out: str, *, gil: bool = False) -> list[asyncio.subprocess.Process]:
    """py-spy (if installed) on every role for the burst: collapsed stacks in ``out/<role>.txt``.

    ``gil``: sample only the thread holding the GIL (py-spy ``--gil``): the Python CPU of a role,
    without a thread's samples while it waits for the GIL (Faust's consumer thread, mostly).
    """
    os.makedirs(out, exist_ok=True)
    procs = []
    for r in roles:
        command = ["py-spy", "record", "-r", "100", "-f", "raw", "-o", f"{out}/{r.name}.txt", "--pid", str(r.pid)]
        if gil:
            command.append("--gil")
        devnull = asyncio.subprocess.DEVNULL
        procs.append(await asyncio.create_subprocess_exec(*command, stdout=devnull, stderr=devnull))
    await asyncio.sleep(1)  # attached before the burst starts
    return procs


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    return sum(cpu_split(pid))


def _child_named(command: str) -> int | None:
    """The pid of this process's child running ``command`` (the broker), if there is one."""
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, rest = stat.read_text().split(" (", 1)[1].rsplit(") ", 1)
        except (OSError, IndexError, ValueError):
            continue
        if name == command and rest.split()[1] == me:
            return int(stat.parent.name)
    return None


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


CPU_PER_NOTIFICATION: dict[str, list[float]] = {}
"""Role -> CPU milliseconds per notification in each burst (robust to a noisy machine)."""
OTHER_CPU_PER_NOTIFICATION: dict[str, list[float]] = {}
"""The broker's and the benchmark process's CPU milliseconds per notification in each burst."""
SYSTEM_SHARE: dict[str, list[float]] = {}
"""Role -> the share of its burst CPU time spent in the kernel (system calls: sockets, mostly)."""
STAGE_REPORTS: list[list[str]] = []
"""``--stages``: the stage table of each round's steady phase."""
SYSCALLS_PER_NOTIFICATION: dict[str, list[tuple[float, float]]] = {}
"""Role -> (read, write) system calls per notification in each burst (each a socket round of some kind)."""


def syscalls(pid: int) -> tuple[int, int]:
    """Read and write system calls of a process so far (Linux ``/proc/<pid>/io``)."""
    fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(fields["syscr"]), int(fields["syscw"])


async def _measure(
    settings: Settings,
    base: str,
    users: list[str],
    database_url: str,
    args: argparse.Namespace,
    roles: list[Role],
    stages: StageRun | None = None,
) -> tuple[list[float], float, float]:
    current: list[Phase] = [Phase()]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        sockets = []
        for user in users:
            ws = await http.ws_connect(
                f"{base.replace('http', 'ws')}/ws/notifications?token={mint_token(settings, user)}"
            )
            sockets.append(ws)
        for ws in sockets:  # the replay frame: presence is registered, the client is live
            await ws.receive(timeout=60)

        async def reader(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for msg in ws:
                frame = orjson.loads(msg.data)
                if frame.get("type") == "notification":
                    current[0].see(frame["notification"]["id"], time.monotonic())

        readers = [asyncio.create_task(reader(ws)) for ws in sockets]
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, linger_ms=args.linger, max_batch_size=256 * 1024
        )
        await producer.start()
        topic = f"{settings.topic_prefix}requests.high"
        try:
            # Warm-up: every user once (group joins, connections, caches), not measured.
            await publish(producer, topic, users, current[0], len(users), None, "warm")
            await wait_phase(current[0], 180, "warm-up")
            current[0] = steady = Phase()
            await publish(producer, topic, users, steady, int(args.rate * args.seconds), args.rate, "steady")
            await wait_phase(steady, 120, "steady phase")
            if stages is not None:
                stamps = await stages.collect(["worker", "api"])
                STAGE_REPORTS.append(stage_report(steady, stamps, stages.gc_pauses, stages.stalls, stages.fetches))
                for name, topics in stages.fetched_since.items():
                    if topics:
                        STAGE_REPORTS[-1].append(
                            f"  {name}: partitions its fetch answers brought records of, by topic (from the start "
                            "to the steady phase's end): "
                            + ", ".join(f"{t} {n}" for t, n in sorted(topics.items(), key=lambda item: -item[1]))
                        )
            current[0] = burst = Phase()
            cpu_before = {r.name: cpu_split(r.pid) for r in roles}
            # Where the rest of the two cores goes: the broker and this process (producer, clients).
            others = {"broker": _child_named("tansu"), "bench clients": os.getpid()}
            others_before = {name: cpu_seconds(pid) for name, pid in others.items() if pid is not None}
            calls_before = {r.name: syscalls(r.pid) for r in roles}
            profilers = await start_profilers(roles, args.profile, gil=args.profile_gil) if args.profile else []
            started = time.monotonic()
            await publish(producer, topic, users, burst, args.burst, None, "burst")
            await wait_phase(burst, 600, "burst phase")
            frames_done = max(burst.received.values())
            rows_done = await rows_visible(database_url, "burst ", args.burst, 600)
            for profiler in profilers:
                profiler.send_signal(signal.SIGINT)
                await profiler.wait()
            if stages is not None:
                burst_began = started + time.time() - time.monotonic()  # on the roles' clock
                STAGE_REPORTS[-1].extend(await produce_report(stages, args.burst, since=burst_began))
            for r in roles:
                (user0, sys0), (user1, sys1) = cpu_before[r.name], cpu_split(r.pid)
                used = user1 - user0 + sys1 - sys0
                SYSTEM_SHARE.setdefault(r.name, []).append((sys1 - sys0) / used if used else 0.0)
                CPU_PER_NOTIFICATION.setdefault(r.name, []).append(used * 1000 / args.burst)
                (r0, w0), (r1, w1) = calls_before[r.name], syscalls(r.pid)
                SYSCALLS_PER_NOTIFICATION.setdefault(r.name, []).append(
                    ((r1 - r0) / args.burst, (w1 - w0) / args.burst)
                )
            for name, before in others_before.items():
                used = cpu_seconds(others[name]) - before  # type: ignore[arg-type]
                OTHER_CPU_PER_NOTIFICATION.setdefault(name, []).append(used * 1000 / args.burst)
        finally:
            await producer.stop()
            for task in readers:
                task.cancel()
            for ws in sockets:
                await ws.close()
    elapsed = max(frames_done, rows_done) - started
    return steady.latencies_ms(), args.burst / elapsed, args.burst / (frames_done - started)


# ---------------------------------------------------------------------------- baseline


async def run_baseline(bootstrap: str, args: argparse.Namespace, partitions: int) -> tuple[list[float], float]:
    """The raw loop: (steady latencies ms at the same rate, burst throughput /s)."""
    tag = uuid.uuid4().hex[:6]
    source, sink = f"base{tag}.in", f"base{tag}.out"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(source, partitions, 1), NewTopic(sink, partitions, 1)])
    await admin.close()
    group = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "rebalance_timeout_ms": 6000}
    loop_consumer = AIOKafkaConsumer(
        source, bootstrap_servers=bootstrap, group_id=f"b{tag}", auto_offset_reset="earliest",
        fetch_max_wait_ms=args.fetch_wait, enable_auto_commit=False, **group,
    )  # fmt: skip
    loop_producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=args.linger)
    final = AIOKafkaConsumer(
        sink, bootstrap_servers=bootstrap, group_id=f"f{tag}", auto_offset_reset="earliest",
        fetch_max_wait_ms=args.fetch_wait, **group,
    )  # fmt: skip
    for client in (loop_consumer, loop_producer, final):
        await client.start()
    while not loop_consumer.assignment() or not final.assignment():
        await asyncio.gather(loop_consumer.getmany(timeout_ms=10), final.getmany(timeout_ms=10))
    current: list[Phase] = [Phase()]

    async def relay() -> None:
        while True:
            batches = await loop_consumer.getmany(timeout_ms=100)
            futures = [
                await loop_producer.send(sink, key=r.key, value=r.value)
                for records in batches.values()
                for r in records
            ]
            await asyncio.gather(*futures)
            if futures:
                await loop_consumer.commit()

    async def tail() -> None:
        while True:
            batches = await final.getmany(timeout_ms=100)
            now = time.monotonic()
            for records in batches.values():
                for r in records:
                    current[0].see(orjson.loads(r.value)["id"], now)

    tasks = [asyncio.create_task(relay()), asyncio.create_task(tail())]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=args.linger, max_batch_size=256 * 1024)
    await producer.start()
    users = [f"u{i}" for i in range(args.users)]
    try:
        await publish(producer, source, users, current[0], 200, None, "warm")
        await wait_phase(current[0], 60, "baseline warm-up")
        current[0] = steady = Phase()
        await publish(producer, source, users, steady, int(args.rate * args.seconds), args.rate, "steady")
        await wait_phase(steady, 120, "baseline steady")
        current[0] = burst = Phase()
        started = time.monotonic()
        await publish(producer, source, users, burst, args.burst, None, "burst")
        await wait_phase(burst, 300, "baseline burst")
        rate = args.burst / (max(burst.received.values()) - started)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in (producer, loop_producer):
            await client.stop()
        for consumer in (loop_consumer, final):
            await consumer.stop()
    return steady.latencies_ms(), rate


# ---------------------------------------------------------------------------- stages (--stages)
#
# Where the steady phase's latency goes. With ``--stages`` the worker and the api run with
# timestamp hooks (a generated ``sitecustomize`` wraps a few functions; nothing else
# changes): each records, per notification id, the wall-clock time at which it passed a
# stage, and writes them to a file when the benchmark asks. The benchmark adds its own
# send and receive times. All processes share the machine's clock.

STAGE_LOG_ENV = "BENCH_STAGE_LOG"
"""File a role's stage stamps go to (not ``HERALD_*``: the roles refuse unknown settings)."""
STAGE_ROLE_ENV = "BENCH_STAGE_ROLE"
STAGE_CAP = 200_000
"""Notifications a role stamps at most (bounded memory)."""
STAGES = (
    ("sent", "bench: the request handed to its producer"),
    ("appended", "bench: the broker acknowledged the request's produce (producer linger, broker)"),
    ("fetched", "worker: the fetch answer that carried it read (consumer thread; after the broker held it)"),
    ("polled", "worker: the record handed out by the Kafka client (after the broker's fetch)"),
    ("inboxed", "worker: the record on the main loop, in its agent's inbox (after Faust's thread hop)"),
    ("handled", "worker: ingest starts on it (after the agent's inbox)"),
    ("decided", "worker: notification.accepted decided (the event's time)"),
    ("submitted", "worker: frame queued for the live dispatch"),
    ("acked", "worker: the broker acknowledged notification.accepted"),
    ("taken", "worker: the dispatch task took the frame's batch"),
    ("published", "worker: presence read and PUBLISH answered by Redis"),
    ("gateway", "api: the frame arrived from the Redis subscription"),
    ("written", "api: the frame written to the socket (receipt queued)"),
    ("client", "bench: the frame read by the user's client"),
)
SITECUSTOMIZE = "import benchmarks.throughput as _bench\n_bench.install_stage_hooks()\n"


def install_stage_hooks() -> None:
    """In a role process started by ``--stages``: wrap the stage points with timestamp recorders."""
    import threading

    path = os.environ.get(STAGE_LOG_ENV)
    if not path:
        return
    stamps: dict[str, dict[str, float]] = {}
    pauses = _record_gc_pauses()
    stalls = LoopStalls()
    fetches: list[tuple[float, float, int, int]] = []
    sends: list[tuple[float, float, int, int]] = []
    produced = _count_produce_requests(sends)
    fetched_topics: dict[str, int] = {}

    def stamp(nid: str, stage: str, at: float | None = None) -> None:
        if nid in stamps or len(stamps) < STAGE_CAP:
            stamps.setdefault(nid, {}).setdefault(stage, time.time() if at is None else at)

    def dump_on_request() -> None:
        trigger = Path(path + ".dump")
        while True:
            if trigger.exists():
                tmp = Path(path + ".tmp")
                tmp.write_bytes(
                    orjson.dumps(
                        {
                            **stamps,
                            GC_KEY: list(pauses),
                            STALLS_KEY: list(stalls.seen),
                            PRODUCE_KEY: produced,
                            FETCH_KEY: list(fetches),
                            SENDS_KEY: list(sends),
                            FETCHED_TOPICS_KEY: fetched_topics,
                        }
                    )
                )
                tmp.replace(path)
                trigger.unlink()
            time.sleep(0.05)

    threading.Thread(target=dump_on_request, name="bench-stage-dump", daemon=True).start()
    role_name = os.environ.get(STAGE_ROLE_ENV)
    if role_name == "worker":
        _hook_worker(stamp, stalls, fetches, fetched_topics)
    elif role_name == "api":
        _hook_api(stamp, stalls)


STALLS_KEY = "__stalls__"
"""The key of a role's stamp file that holds its event loop's stalls."""


class LoopStalls:
    """The stalls of a role's event loop: stretches of ``threshold`` seconds or more in which it ran no
    timer (one callback or a run of them held it), each with where the loop's thread was in it.

    A callback every ``step`` seconds notes the time; a watcher thread samples the loop thread's
    stack when the note is ``threshold`` old (a CPU-bound stretch: it takes the GIL at the next
    switch interval), and the callback records the stall's start, length and that stack when it runs again.
    """

    def __init__(self, *, step: float = 0.002, threshold: float = 0.010) -> None:
        self.step = step
        self.threshold = threshold
        self.seen: list[tuple[float, float, str]] = []
        self._beat = 0.0
        self._stack = ""
        self._thread_id: int | None = None

    def start(self) -> None:
        """Start watching the running loop (idempotent; call it from the loop's thread)."""
        import threading

        if self._thread_id is not None:
            return
        self._thread_id = threading.get_ident()
        loop = asyncio.get_running_loop()
        self._beat = time.time()

        def beat() -> None:
            now = time.time()
            if now - self._beat >= self.threshold and len(self.seen) < GC_CAP:
                self.seen.append((self._beat, now - self._beat, self._stack))
            self._beat, self._stack = now, ""
            loop.call_later(self.step, beat)

        loop.call_later(self.step, beat)
        threading.Thread(target=self._watch, name="bench-loop-stalls", daemon=True).start()

    def _watch(self) -> None:
        import sys
        import traceback

        sampled = 0.0
        while True:
            time.sleep(self.step)
            beat = self._beat
            if time.time() - beat >= self.threshold and sampled != beat:
                frame = sys._current_frames().get(self._thread_id or 0)
                if frame is not None:
                    summary = traceback.extract_stack(frame)[-14:]
                    self._stack = " < ".join(
                        f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.name}:{f.lineno}"
                        for f in reversed(summary)
                    )
                sampled = beat


GC_KEY = "__gc__"
"""The key of a role's stamp file that holds its garbage collections, not a notification's stamps."""
GC_CAP = 100_000


FETCH_KEY = "__fetches__"
"""The key of a role's stamp file that holds its consumer's fetch requests (``_hook_worker``)."""
FETCH_CAP = 100_000
FETCHED_TOPICS_KEY = "__fetched_topics__"
"""The key of a role's stamp file that holds, per topic (without the run's prefix), the partitions
its consumer's fetch answers brought records of, so far."""
SENDS_KEY = "__sends__"
"""The key of a role's stamp file that holds its produce requests (sent, answered, partition batches, records)."""


PRODUCE_KEY = "__produce__"
"""The key of a role's stamp file that holds its producers' counts: requests, partition batches, records."""


def _count_produce_requests(timed: list[tuple[float, float, int, int]] | None = None) -> dict[str, int]:
    """Count this process's produce requests (aiokafka's sender), their partition batches and records;
    each request's times (sent, answered), partition batches and records go to ``timed``."""
    from typing import Any

    from aiokafka.producer.sender import Sender

    counts = {"requests": 0, "batches": 0, "records": 0}
    send = Sender._send_produce_req

    async def counted(self: Any, node_id: Any, batches: Any) -> Any:
        counts["requests"] += 1
        counts["batches"] += len(batches)
        records = sum(batch.record_count for batch in batches.values())
        counts["records"] += records
        began = time.time()
        try:
            return await send(self, node_id, batches)
        finally:
            if timed is not None and len(timed) < FETCH_CAP:
                timed.append((began, time.time(), len(batches), records))

    Sender._send_produce_req = counted
    return counts


def _record_gc_pauses() -> list[tuple[float, float, int]]:
    """Every garbage collection of this process from now on: (start, seconds, generation).

    Wall-clock start (the stamps' clock) and a ``perf_counter`` duration; a collection stops
    the whole event loop, so each is a pause of every stage in flight.
    """
    import gc

    pauses: list[tuple[float, float, int]] = []
    started: list[float] = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0], started[1] = time.time(), time.perf_counter()
        elif len(pauses) < GC_CAP:
            pauses.append((started[0], time.perf_counter() - started[1], info["generation"]))

    gc.callbacks.append(on_gc)
    return pauses


def _request_id(value: bytes | None) -> str | None:
    try:
        rid = orjson.loads(value or b"")["id"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return rid if isinstance(rid, str) else None


def _hook_worker(
    stamp: Callable[..., None],
    stalls: LoopStalls | None = None,
    fetches: list[tuple[float, float, int, int]] | None = None,
    fetched_topics: dict[str, int] | None = None,
) -> None:
    from typing import Any

    from aiokafka.consumer.fetcher import Fetcher

    proc_fetch = Fetcher._proc_fetch_request
    answers: dict[Any, tuple[Any, float, float]] = {}
    brought = fetched_topics if fetched_topics is not None else {}
    """Partition -> (its FetchResult, the fetch's sending, its answer read): the fetch its records came in."""

    async def fetch_timed(self: Any, assignment: Any, node_id: Any, request: Any) -> Any:
        # Each fetch request of the worker's consumer: sent, answered, request partitions and all partitions in it.
        began = time.time()
        try:
            return await proc_fetch(self, assignment, node_id, request)
        finally:
            read = time.time()
            for tp, result in self._records.items():
                if answers.get(tp, (None,))[0] is not result:
                    answers[tp] = (result, began, read)
                    kind = tp.topic.split(".", 1)[-1]  # the topic without the run's prefix
                    brought[kind] = brought.get(kind, 0) + 1
            if fetches is not None and len(fetches) < FETCH_CAP:
                counts = [(topic, len(partitions)) for topic, partitions in request.topics]
                asked = sum(n for topic, n in counts if ".requests." in topic)
                fetches.append((began, time.time(), asked, sum(n for _, n in counts)))

    Fetcher._proc_fetch_request = fetch_timed

    from streams.ingest import Ingest
    from streams.live_dispatch import LiveDispatch
    from streams.websocket_dispatch import RedisDispatcher

    fetched_records = Fetcher.fetched_records

    async def polled(self: Any, *args: Any, **kwargs: Any) -> Any:
        batches = await fetched_records(self, *args, **kwargs)
        now = time.time()
        for tp, records in batches.items():
            if ".requests." in tp.topic:
                answer = answers.get(tp)
                for record in records:
                    if (rid := _request_id(record.value)) is not None:
                        stamp(rid, "polled", now)
                        if answer is not None:
                            stamp(rid, "fetch sent", answer[1])
                            stamp(rid, "fetched", answer[2])
        return batches

    handle = Ingest.handle

    async def handled(self: Any, message: Any, priority: Any) -> None:
        if stalls is not None:
            stalls.start()
        if (rid := _request_id(message.value)) is not None:
            stamp(rid, "handled")
        await handle(self, message, priority)
        if rid is not None:
            stamp(rid, "finished")

    submit = LiveDispatch.submit

    async def submitted(self: Any, item: Any) -> None:
        nid = item.cause.data.notification_id
        stamp(nid, "decided", item.cause.time.timestamp())
        stamp(nid, "submitted")

        def acked(_: Any) -> None:
            stamp(nid, "acked")

        for ack in item.after:
            if asyncio.isfuture(ack):
                ack.add_done_callback(acked)
        await submit(self, item)

    dispatch = LiveDispatch._dispatch_until_done
    current: list[list[str]] = [[]]

    async def taken(self: Any, batch: Any) -> None:
        current[0] = [item.cause.data.notification_id for item in batch]
        for nid in current[0]:
            stamp(nid, "taken")
        await dispatch(self, batch)

    dispatch_many = RedisDispatcher.dispatch_many

    async def published(self: Any, items: Any) -> Any:
        result = await dispatch_many(self, items)
        now = time.time()
        for nid in current[0]:
            stamp(nid, "published", now)
        return result

    try:
        from streams.request_inbox import Inbox
    except ImportError:  # an older tree: records reach the agent through Faust's stream
        pass
    else:
        put = Inbox.put

        def inboxed(self: Any, message: Any) -> None:
            if (rid := _request_id(message.value)) is not None:
                stamp(rid, "inboxed")
            put(self, message)

        Inbox.put = inboxed  # type: ignore[method-assign]

    Fetcher.fetched_records = polled
    Ingest.handle = handled  # type: ignore[method-assign]
    LiveDispatch.submit = submitted  # type: ignore[method-assign]
    LiveDispatch._dispatch_until_done = taken  # type: ignore[method-assign]
    RedisDispatcher.dispatch_many = published  # type: ignore[method-assign]


def _hook_api(stamp: Callable[..., None], stalls: LoopStalls | None = None) -> None:
    from typing import Any

    from api.ws.gateway import Hub
    from api.ws.receipts import Receipts

    deliver_remote = Hub.deliver_remote

    async def arrived(self: Any, user_id: str, frame: Any, text: str | None = None) -> int:
        if stalls is not None:
            stalls.start()
        carried = frame.get("notification") if isinstance(frame, dict) else None
        if isinstance(carried, dict) and isinstance(carried.get("id"), str):
            stamp(carried["id"], "gateway")
        return await deliver_remote(self, user_id, frame, text)

    delivered = Receipts.delivered

    async def written(self: Any, notifications: Any, **kwargs: Any) -> None:
        notifications = list(notifications)
        for item in notifications:
            stamp(item["id"], "written")
        await delivered(self, notifications, **kwargs)

    delivered_now = getattr(Receipts, "delivered_now", None)  # the frames written in their turn (not before)

    def written_now(self: Any, notifications: Any, **kwargs: Any) -> None:
        now = time.time()
        for item in notifications:
            stamp(item["id"], "written", now)
        assert delivered_now is not None
        delivered_now(self, notifications, **kwargs)

    Hub.deliver_remote = arrived  # type: ignore[method-assign]
    Receipts.delivered = written  # type: ignore[method-assign]
    if delivered_now is not None:
        Receipts.delivered_now = written_now  # type: ignore[method-assign]


class StageEnv(TypedDict, total=False):
    """The environment ``--stages`` adds to a role."""

    PYTHONPATH: str
    BENCH_STAGE_LOG: str
    BENCH_STAGE_ROLE: str


class ApiEnv(StageEnv, total=False):
    """The api's extra environment: ``StageEnv``, or ``--cprofile-api``'s."""

    BENCH_API_PROFILE: str  # API_PROFILE_ENV


@dataclass
class StageRun:
    """The files of one ``--stages`` run: a ``sitecustomize`` directory and each role's stamp file."""

    folder: Path

    def env(self, role_name: str) -> StageEnv:
        paths = [str(self.folder), str(Path(__file__).resolve().parent.parent)]
        if os.environ.get("PYTHONPATH"):
            paths.append(os.environ["PYTHONPATH"])
        return {
            "PYTHONPATH": os.pathsep.join(paths),
            "BENCH_STAGE_LOG": str(self.folder / f"{role_name}.json"),  # STAGE_LOG_ENV
            "BENCH_STAGE_ROLE": role_name,  # STAGE_ROLE_ENV
        }

    gc_pauses: dict[str, list[tuple[float, float, int]]] = field(default_factory=dict)
    """Per role, its garbage collections (start, seconds, generation), from the last ``collect``."""
    stalls: dict[str, list[tuple[float, float, str]]] = field(default_factory=dict)
    """Per role, its event loop's stalls (start, seconds, the loop thread's stack in it), from the last ``collect``."""
    produced: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per role, its produce requests, partition batches and records so far, at the last ``collect``."""
    fetches: dict[str, list[tuple[float, float, int, int]]] = field(default_factory=dict)
    """Per role, its consumer's fetch requests (sent, answered, request partitions, all partitions)."""

    fetched_topics: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per role, per topic, the partitions its fetch answers brought records of, at the last ``collect``."""
    fetched_since: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per role, ``fetched_topics`` gained between the last two ``collect``s."""

    async def collect(self, role_names: list[str], within: float = 30.0) -> dict[str, dict[str, float]]:
        """Ask each role for its stamps; merged by notification id (each role's collections: ``gc_pauses``)."""
        for name in role_names:
            (self.folder / f"{name}.json").unlink(missing_ok=True)
            (self.folder / f"{name}.json.dump").touch()
        merged: dict[str, dict[str, float]] = {}
        deadline = time.monotonic() + within
        for name in role_names:
            out = self.folder / f"{name}.json"
            while not out.exists():
                if time.monotonic() > deadline:
                    raise SystemExit(f"--stages: {name} wrote no stamps within {within} s (see its log)")
                await asyncio.sleep(0.05)
            loaded = orjson.loads(out.read_bytes())
            self.gc_pauses[name] = [tuple(pause) for pause in loaded.pop(GC_KEY, [])]
            self.stalls[name] = [tuple(stall) for stall in loaded.pop(STALLS_KEY, [])]
            self.produced[name] = loaded.pop(PRODUCE_KEY, {})
            self.fetches[name] = [tuple(fetch) for fetch in loaded.pop(FETCH_KEY, [])]
            self.fetches[f"{name} produce"] = [tuple(sent) for sent in loaded.pop(SENDS_KEY, [])]
            before = self.fetched_topics.get(name, {})
            now = loaded.pop(FETCHED_TOPICS_KEY, {})
            self.fetched_topics[name] = now
            self.fetched_since[name] = {topic: n - before.get(topic, 0) for topic, n in now.items()}
            for nid, stages in loaded.items():
                merged.setdefault(nid, {}).update(stages)
        return merged


def stage_report(
    phase: Phase,
    stamps: dict[str, dict[str, float]],
    gc_pauses: dict[str, list[tuple[float, float, int]]] | None = None,
    stalls: dict[str, list[tuple[float, float, str]]] | None = None,
    fetches: dict[str, list[tuple[float, float, int, int]]] | None = None,
) -> list[str]:
    """Lines of the stage table: per stage, p50/p99 since the publish and of the step from the previous stage;
    then each role's garbage collections during the phase (``gc_pauses``) and how many of the slowest
    notifications one of them paused."""
    wall = time.time() - time.monotonic()  # the benchmark's monotonic times on the roles' clock
    rows: dict[str, dict[str, float]] = {}
    for rid, sent in phase.sent.items():
        if rid not in phase.received:
            continue
        row = {"sent": sent + wall, **stamps.get(rid, {}), "client": phase.received[rid] + wall}
        if rid in phase.appended:
            row["appended"] = phase.appended[rid] + wall
        rows[rid] = row
    lines = [
        f"stages of the steady phase ({len(rows)} notifications; ms; p50 / p99):",
        f"  {'stage':<10} {'since publish':>17} {'step from previous':>20}  what",
    ]
    previous = "sent"
    for name, what in STAGES[1:]:
        since = [(r[name] - r["sent"]) * 1000 for r in rows.values() if name in r]
        step = [(r[name] - r[previous]) * 1000 for r in rows.values() if name in r and previous in r]
        if not since:
            lines.append(f"  {name:<10} {'(no stamps)':>17} {'':>20}  {what}")
            continue
        lines.append(
            f"  {name:<10} {percentile(since, 50):7.1f} / {percentile(since, 99):7.1f} "
            f"{percentile(step, 50):8.1f} / {percentile(step, 99):8.1f}  {what}"
        )
        previous = name
    waits = [(r["acked"] - r["taken"]) * 1000 for r in rows.values() if "acked" in r and "taken" in r]
    if waits:
        held = [w for w in waits if w > 0]
        p50, p99 = (percentile(held, 50), percentile(held, 99)) if held else (0.0, 0.0)
        lines.append(
            f"  the dispatch task waited for the acceptance's ack for {len(held)} of {len(waits)} frames "
            f"(p50 {p50:.1f} ms, p99 {p99:.1f} ms of those)"
        )
    batches = {r["published"] for r in rows.values() if "published" in r}  # one stamp per Redis call
    if batches:
        lines.append(
            f"  the live dispatch took them in {len(batches)} batches ({len(rows) / len(batches):.1f} a batch)"
        )
    lines.append("  spans, per notification (p50 / p99 ms):")
    own = [(r["finished"] - r["handled"]) * 1000 for r in rows.values() if "finished" in r and "handled" in r]
    if own:
        lines.append(
            f"    handled -> finished: {percentile(own, 50):.1f} / {percentile(own, 99):.1f}  ingest's whole handle"
        )
    for start, end, what in SPANS:
        spans = [(r[end] - r[start]) * 1000 for r in rows.values() if start in r and end in r]
        if spans:
            lines.append(f"    {start} -> {end}: {percentile(spans, 50):.1f} / {percentile(spans, 99):.1f}  {what}")
    if gc_pauses and rows:
        lines.extend(gc_report(rows, gc_pauses))
    if stalls and rows:
        lines.extend(stall_report(rows, stalls))
    if fetches and rows:
        lines.extend(fetch_report(rows, fetches))
    return lines


def fetch_report(
    rows: dict[str, dict[str, float]], fetches: dict[str, list[tuple[float, float, int, int]]]
) -> list[str]:
    """Each role's fetch requests inside the phase: how long the broker held them, the gap from one's answer
    to the next one's sending (the consumer's records still buffered: the client sends none meanwhile), and
    how many left request partitions out."""
    begin = min(r["sent"] for r in rows.values())
    end = max(r["client"] for r in rows.values())
    lines = ["  fetch and produce requests during the phase (ms, p50 / p99):"]
    for name, seen in fetches.items():
        inside = sorted(f for f in seen if begin <= f[0] <= end)
        if len(inside) < 2:
            continue
        held = [(f[1] - f[0]) * 1000 for f in inside]
        if name.endswith(" produce"):  # (sent, answered, partition batches, records)
            gaps = [(b[0] - a[1]) * 1000 for a, b in itertools.pairwise(inside)]
            lines.append(
                f"    {name}: {len(inside)} requests, answered in {percentile(held, 50):.1f} / "
                f"{percentile(held, 99):.1f}, answer -> next sent {percentile(gaps, 50):.1f} / "
                f"{percentile(gaps, 99):.1f}, {statistics.mean(f[3] for f in inside):.1f} records a request"
            )
            continue
        gaps = [(b[0] - a[1]) * 1000 for a, b in itertools.pairwise(inside)]
        most = max(f[2] for f in inside)
        short = sum(1 for f in inside if f[2] < most)
        lines.append(
            f"    {name}: {len(inside)} fetches, held {percentile(held, 50):.1f} / {percentile(held, 99):.1f}, "
            f"answer -> next sent {percentile(gaps, 50):.1f} / {percentile(gaps, 99):.1f}; "
            f"{short} without some of the {most} request partitions"
        )
        widest = max(f[3] for f in inside)
        wide = [h for h, f in zip(held, inside, strict=True) if f[3] == widest]
        narrow = [h for h, f in zip(held, inside, strict=True) if f[3] < widest]
        if wide and narrow:  # the worker's fetches that asked for the event log too (SparseFetch) against the rest
            lines.append(
                f"      held, the {len(wide)} asking for all {widest} partitions: {percentile(wide, 50):.1f} / "
                f"{percentile(wide, 99):.1f}; the {len(narrow)} asking for fewer: {percentile(narrow, 50):.1f} / "
                f"{percentile(narrow, 99):.1f}"
            )
    return lines


async def produce_report(stages: StageRun, burst: int, *, since: float = 0.0) -> list[str]:
    """The roles' produce requests in the burst (since the steady phase's ``collect``), per notification;
    then their garbage collections from ``since`` (the burst's start, wall clock) on."""
    before = {name: dict(counts) for name, counts in stages.produced.items()}
    await stages.collect(list(before))
    lines = ["  produce requests in the burst, per notification (requests, partition batches, records):"]
    for name, counts in stages.produced.items():
        was = before.get(name, {})
        requests, batches, records = (counts.get(k, 0) - was.get(k, 0) for k in ("requests", "batches", "records"))
        lines.append(
            f"    {name}: {requests / burst:.3f}, {batches / burst:.3f}, {records / burst:.3f}"
            + (f" ({records / requests:.1f} records a request)" if requests else "")
        )
    lines.append("  garbage collections in the burst (us per notification, by generation; longest ms):")
    for name, pauses in stages.gc_pauses.items():
        inside = [p for p in pauses if p[0] >= since]
        per = ", ".join(f"gen{g} {sum(p[1] for p in inside if p[2] == g) * 1e6 / burst:.1f}" for g in (0, 1, 2))
        longest = max((p[1] for p in inside), default=0.0) * 1000
        lines.append(f"    {name}: {per}; longest {longest:.1f} ms")
    return lines


def stall_report(rows: dict[str, dict[str, float]], stalls: dict[str, list[tuple[float, float, str]]]) -> list[str]:
    """Each role's event-loop stalls inside the phase, how many of the slowest 1% of notifications one
    held up, and the commonest places the loop's thread was in them (``LoopStalls``)."""
    begin = min(r["sent"] for r in rows.values())
    end = max(r["client"] for r in rows.values())
    slowest = sorted(rows.values(), key=lambda r: r["client"] - r["sent"])[-max(1, len(rows) // 100) :]
    lines = ["  event-loop stalls of 10 ms or more during the phase:"]
    for name, seen in stalls.items():
        inside = [s for s in seen if begin <= s[0] <= end]
        if not inside:
            lines.append(f"    {name}: none")
            continue
        lengths = [s[1] * 1000 for s in inside]
        hit = [r for r in slowest if any(s[0] < r["client"] and s[0] + s[1] > r["sent"] for s in inside)]
        lines.append(
            f"    {name}: {len(inside)} stalls, {sum(lengths):.0f} ms in all, "
            f"median {statistics.median(lengths):.1f} ms, longest {max(lengths):.1f} ms; "
            f"{len(hit)} of the slowest {len(slowest)} notifications overlapped one"
        )
        places: dict[str, list[float]] = {}
        for _start, length, stack in inside:
            places.setdefault(stack or "(not sampled)", []).append(length * 1000)
        for stack, own in sorted(places.items(), key=lambda item: -sum(item[1]))[:6]:
            lines.append(f"      {len(own)} stalls, {sum(own):.0f} ms: {stack}")
    return lines


def gc_report(rows: dict[str, dict[str, float]], gc_pauses: dict[str, list[tuple[float, float, int]]]) -> list[str]:
    """Each role's collections inside the phase (from the first publish to the last frame), and how many
    of the slowest 1% of notifications (publish -> client) had a collection of a role in flight."""
    begin = min(r["sent"] for r in rows.values())
    end = max(r["client"] for r in rows.values())
    lines = ["  garbage collections during the phase (count, total ms, longest ms, by generation):"]
    inside = {name: [p for p in pauses if begin <= p[0] <= end] for name, pauses in gc_pauses.items()}
    for name, pauses in inside.items():
        by_generation = []
        for generation in (0, 1, 2):
            own = [p[1] * 1000 for p in pauses if p[2] == generation]
            if own:
                by_generation.append(f"gen{generation} {len(own)}, {sum(own):.1f}, {max(own):.1f}")
        lines.append(f"    {name}: {'; '.join(by_generation) or 'none'}")
    slowest = sorted(rows.values(), key=lambda r: r["client"] - r["sent"])[-max(1, len(rows) // 100) :]
    for name, pauses in inside.items():
        hit = [r for r in slowest if any(r["sent"] <= p[0] <= r["client"] for p in pauses)]
        longest = [max((p[1] for p in pauses if r["sent"] <= p[0] <= r["client"]), default=0.0) for r in hit]
        lines.append(
            f"    the slowest {len(slowest)} notifications: {len(hit)} had a {name} collection in flight"
            + (f" (longest of each, median {statistics.median(longest) * 1000:.1f} ms)" if hit else "")
        )
    return lines


SPANS = (
    ("sent", "polled", "to the worker: producer linger, broker, fetch wait"),
    ("appended", "fetch sent", "the append to the sending of the fetch that carried it (< 0: already in flight)"),
    ("fetch sent", "fetched", "that fetch held by the broker, its answer read"),
    ("polled", "submitted", "in the worker up to the frame: thread hop, agent buffer, decision"),
    ("submitted", "acked", "the acceptance's append: producer linger, broker"),
    ("submitted", "published", "the live dispatch: the ack, the batch, Redis"),
    ("acked", "published", "the live dispatch after the ack"),
    ("gateway", "client", "the gateway and the client's socket"),
)


# ---------------------------------------------------------------------------- report


@dataclass
class Result:
    herald_rate: list[float] = field(default_factory=list)
    herald_frames_rate: list[float] = field(default_factory=list)
    base_rate: list[float] = field(default_factory=list)
    herald_p50: list[float] = field(default_factory=list)
    herald_p99: list[float] = field(default_factory=list)
    base_p50: list[float] = field(default_factory=list)
    base_p99: list[float] = field(default_factory=list)


async def measure(args: argparse.Namespace, say: Callable[[str], None] = print) -> Result:
    """All rounds; each round measures the baseline, then Herald, on the same (fresh) broker."""
    result = Result()
    for r in range(args.rounds):
        # A fresh broker per round: Tansu's in-memory log of earlier rounds slows later ones.
        async with broker() as bootstrap:
            base_lat, base_rate = await run_baseline(bootstrap, args, partitions=4)
            result.base_rate.append(base_rate)
            result.base_p50.append(percentile(base_lat, 50))
            result.base_p99.append(percentile(base_lat, 99))
            db: str
            with scratch_database() as db:
                lat, rate, frames_rate = await run_herald(bootstrap, db, args)
            result.herald_rate.append(rate)
            result.herald_frames_rate.append(frames_rate)
            result.herald_p50.append(percentile(lat, 50))
            result.herald_p99.append(percentile(lat, 99))
            cpu = ", ".join(f"{name} {v[-1]:.2f}" for name, v in CPU_PER_NOTIFICATION.items())
            calls = ", ".join(
                f"{name} {v[-1][0]:.2f}/{v[-1][1]:.2f} ({SYSTEM_SHARE[name][-1]:.0%} of its CPU in the kernel)"
                for name, v in SYSCALLS_PER_NOTIFICATION.items()
            )
            other = ", ".join(f"{name} {v[-1]:.2f}" for name, v in OTHER_CPU_PER_NOTIFICATION.items())
            if STAGE_REPORTS:
                say("\n".join(f"round {r + 1}: {line}" for line in STAGE_REPORTS[-1]))
            say(
                f"round {r + 1}: CPU ms per notification: {cpu}; not Herald: {other}\n"
                f"round {r + 1}: read/write system calls per notification: {calls}\n"
                f"round {r + 1}: burst {args.burst:,}: herald {rate:7.0f}/s (frames only {frames_rate:7.0f}/s), "
                f"raw loop {base_rate:7.0f}/s | steady {args.rate:.0f}/s: herald p50 {result.herald_p50[-1]:.1f} "
                f"p99 {result.herald_p99[-1]:.1f} ms, raw loop p50 {result.base_p50[-1]:.1f} "
                f"p99 {result.base_p99[-1]:.1f} ms"
            )
    return result


async def summary_rows(args: argparse.Namespace) -> list[tuple[str, str, str, str, str]]:
    """The ``make bench`` rows of this program."""
    result = await measure(args)
    cpu = ", ".join(f"{name} {statistics.median(v):.2f}" for name, v in CPU_PER_NOTIFICATION.items())
    return [*rows(result, args), ("CPU ms per notification in the burst, by role", cpu, "", "", "")]


def rows(result: Result, args: argparse.Namespace) -> list[tuple[str, str, str, str, str]]:
    """Summary rows: measure, Herald, baseline, ratio, target (medians over rounds)."""
    med = statistics.median
    h, b = med(result.herald_rate), med(result.base_rate)
    return [
        (
            f"sustained end to end, burst of {args.burst:,} (frame + row; projector at nice {args.projector_nice})",
            f"{h:,.0f}/s",
            f"{b:,.0f}/s",
            f"{h / b:.3f}",
            ">= 2,000/s, ratio >= 0.15",
        ),
        (
            f"steady {args.rate:.0f}/s publish -> frame p50",
            f"{med(result.herald_p50):.1f} ms",
            f"{med(result.base_p50):.1f} ms",
            f"{med(result.herald_p50) / med(result.base_p50):.1f}x",
            "<= 15 ms",
        ),
        (
            f"steady {args.rate:.0f}/s publish -> frame p99",
            f"{med(result.herald_p99):.1f} ms",
            f"{med(result.base_p99):.1f} ms",
            f"{med(result.herald_p99) / med(result.base_p99):.1f}x",
            "<= 50 ms",
        ),
    ]


def _new_directory(path: str) -> Path:
    folder = Path(path).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _positive(text: str) -> float:
    """A number above 0 (the steady phase cannot be left out: its latencies are part of every report)."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--burst", type=int, default=20_000, help="requests in the burst phase")
    p.add_argument("--rate", type=_positive, default=500.0, help="requests per second in the steady phase (> 0)")
    p.add_argument("--seconds", type=_positive, default=10.0, help="length of the steady phase (> 0)")
    p.add_argument("--users", type=int, default=200, help="users, one WebSocket client each")
    p.add_argument("--limit", type=int, default=500, help="high-priority rate limit per user and hour in the run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--profile", metavar="DIR", help="py-spy each role during the burst (collapsed stacks in DIR)")
    p.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only the thread holding the GIL (py-spy --gil: CPU, not GIL waits)",
    )
    p.add_argument(
        "--linger",
        type=int,
        default=PRODUCER_LINGER_MS,
        help="producer linger (ms) of every producer in the run: the benchmark's, Herald's roles' and the raw loop's",
    )
    p.add_argument(
        "--fetch-wait",
        type=int,
        default=FETCH_WAIT_MS,
        help="consumer fetch wait (ms) on the measured path: the worker's and the raw loop's consumers alike (Tansu "
        "holds a fetch that finds records for up to about half its wait)",
    )
    p.add_argument(
        "--off-path-fetch-wait",
        type=int,
        default=OFF_PATH_FETCH_WAIT_MS,
        metavar="MS",
        help="fetch wait (ms) of the roles whose consumers are not on the frame's path (projector, api)",
    )
    p.add_argument(
        "--event-log-fetch-interval",
        type=int,
        default=EVENT_LOG_FETCH_INTERVAL_MS,
        metavar="MS",
        help="the worker asks for the event log in at most one fetch every MS ms (HERALD_KAFKA_EVENT_LOG_FETCH_"
        "INTERVAL_MS; 0: in every fetch, production's default; a --worker-tree that lacks the setting ignores it)",
    )
    p.add_argument(
        "--projector-nice",
        type=int,
        choices=range(20),
        metavar="N",
        default=PROJECTOR_NICE,
        help=f"the projector's niceness, 0-19 (default {PROJECTOR_NICE}: compose's cpu_shares 128 for the projector,"
        " HERALD_PROJECTOR_NICE on a shared host; 0: as every role before it)",
    )
    p.add_argument(
        "--worker-tree",
        metavar="DIR",
        type=lambda path: Path(path).resolve(),
        help="run the worker from this checkout of the project (git archive <commit> | tar -x -C DIR)",
    )
    p.add_argument(
        "--api-tree",
        metavar="DIR",
        type=lambda path: Path(path).resolve(),
        help="run the api from this checkout of the project (git archive <commit> | tar -x -C DIR)",
    )
    p.add_argument(
        "--projector-tree",
        metavar="DIR",
        type=lambda path: Path(path).resolve(),
        help="run the projector from this checkout of the project (git archive <commit> | tar -x -C DIR)",
    )
    p.add_argument(
        "--cprofile",
        metavar="DIR",
        type=_new_directory,
        help="run the worker under cProfile (DIR/worker.prof, the whole run of the last round: Python calls)",
    )
    p.add_argument(
        "--cprofile-api",
        metavar="DIR",
        type=_new_directory,
        help="run the api under cProfile timing CPU, not wall-clock, time (DIR/api.prof, the last round's whole run)",
    )
    p.add_argument(
        "--stages",
        action="store_true",
        help="break the steady phase's latency into stages (timestamp hooks in the worker and the api)",
    )
    return p


async def main() -> None:
    args = parser().parse_args()
    result = await measure(args)
    print(
        f"\nmedians of {args.rounds} rounds (fetch wait on the path {args.fetch_wait} ms, the worker's and the raw "
        f"loop's, off it {args.off_path_fetch_wait} ms; linger {args.linger} ms, every producer)"
    )
    for row in rows(result, args):
        print(" | ".join(row))
    cpu = ", ".join(f"{name} {statistics.median(v):.2f}" for name, v in CPU_PER_NOTIFICATION.items())
    print(f"CPU per notification in the burst (ms, median): {cpu}")


if __name__ == "__main__":
    asyncio.run(main())
