"""Bulk sends end to end (issue 9, target 5), with the roles as separate processes, next to a
raw baseline measured on the same servers in the same run.

Herald: ``herald worker`` (APNs sink configured), ``herald projector`` and ``herald api``
each in its own process, real Postgres and Redis, a fresh Tansu broker, producers batching
as in production. The APNs emulator runs in the benchmark's process, as in the tests (its
records are read directly: serialising 10,000 of them per poll through the inspection API
would cost a process competing for the same 2 cores). Two measures on the same processes:

- **devices**: 10,000 device tokens of 10,000 distinct users are registered by appending
  ``device.registered`` to the event log (as ``POST /api/devices`` does, without its
  per-user write rate limit) and projected; then one ``POST /api/notifications/bulk`` with
  the 10,000 ``device_tokens``. Time = POST sent -> the last push received by the emulator
  (``received_at`` from its inspection API; every token once, status 200).
  Baseline: a raw HTTP/2 client (``benchmarks.apns.RawH2``: one TLS connection, pre-built
  headers, one JWT) pushing the same 10,000 tokens to the same emulator, 100 in flight.
- **users**: one ``POST /api/notifications/bulk`` with 100,000 ``user_ids`` (channel
  ``websocket``, nobody connected). Time = POST sent -> every ``notification.accepted`` of
  the bulk on the event log and every notification a row in Postgres.
  Baseline: the raw aiokafka consume->produce loop of ``benchmarks.throughput`` moving the
  same number of records between two topics on the same broker.

Both baselines run before the roles start, so nothing else competes with them. Where the
time goes is printed per measure (POST answered = every request on the broker; accepted =
the worker's ingest decisions on the log; pushes/rows = the sink or the projector), with the
CPU seconds each role used.

    uv run python -m benchmarks.bulk [--devices 10000] [--users 100000] [--concurrency 100] [--in-flight 100]
        [--workers 1] [--profile DIR [--profile-gil]] [--worker-tree DIR] [--work-records] [--priority P]
        [--campaigns N]

``--users 0`` measures the push bulk alone (no raw loop baseline, no campaign); ``--devices 0``
the campaign alone (no raw h2 baseline, no devices; the warm-up is a small ``user_ids`` bulk).
``--work-records`` measures the delivery side alone: instead of the POST, the push bulk's
work records (a ``notification.accepted`` naming each token, as ingest writes them) are
produced straight onto the APNs delivery topic; time = first record sent -> last push, and
the worker's CPU is the sink's (its ingest idle). ``--workers N`` runs N ``herald worker``
processes in one consumer group (the request topics' partitions, and so the campaign's
users, spread over them); the CPU of each is printed and their sum is the worker's figure.
``--profile DIR`` records every worker with py-spy during the measured bulks (``uv tool
install py-spy``); ``--profile-gil`` samples only the thread holding the GIL (on a loaded
machine plain samples also count a thread waiting for a core). ``--priority`` sends the
campaign at another priority than the bulk's default (medium; ``benchmarks.throughput``'s
burst is high); ``--campaigns N`` runs N campaigns of ``--users`` new users one after the
other on the same roles and broker (the log longer for each). The broker's CPU is printed
beside the roles'. ``--worker-tree DIR`` runs
the workers from another checkout of the project (``git archive <commit> | tar -x -C DIR``)
for a comparison of the same build of everything else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import jwt
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from api.auth import SCOPE_WRITE, mint_token
from benchmarks.apns import TOPIC, RawH2
from benchmarks.apns import measure as raw_rate
from benchmarks.common import Row, bench_settings, broker, scratch_database
from benchmarks.roles import Role, bench_secret, role, wait_ready
from benchmarks.throughput import _child_named, cpu_seconds, run_baseline
from engine.settings import Settings
from herald.apns_emulator import ApnsEmulator, generate_signing_key
from herald.broker import free_port
from schemas.codec import encode
from schemas.envelope import Envelope
from schemas.events import DeviceRegistered, NotificationAccepted
from schemas.ids import uuid7
from streams.admin import ensure_topics

REDIS = "redis://127.0.0.1:6379/14"
KEY_ID, TEAM_ID = "KEY1234567", "TEAM123456"
PRODUCER_LINGER_MS = 5
WARM_DEVICES = 20
"""Devices of the unmeasured warm-up bulk (group joins, the APNs connection, caches)."""
WARM_USERS = 200
"""Users of the unmeasured warm-up bulk when there is no push bulk (``--devices 0``)."""
READER_FETCH_WAIT_MS = 100
"""The fetch wait of the benchmark's own reader of the event log (``Acceptances``). Tansu holds a
fetch for its whole wait and each fetch costs it in proportion to the batches already in the
partition, so a reader polling every 20 ms took about a third of the broker's CPU in the
campaign; it times acceptances to 0.1 s in runs of tens of seconds."""
IDLE_SAMPLE_SECONDS = 3.0
"""How long the roles' idle CPU is sampled before the measured bulks."""


# ---------------------------------------------------------------------------- emulator


async def raw_pushes(emulator: ApnsEmulator, key_pem: str, tokens: list[str], concurrency: int) -> float:
    """Seconds for a raw HTTP/2 client to push every token once (``concurrency`` in flight)."""
    host, port = emulator.address
    provider = jwt.encode(
        {"iss": TEAM_ID, "iat": int(time.time())}, key_pem, algorithm="ES256", headers={"kid": KEY_ID}
    )
    raw = RawH2(host, port, emulator.client_ssl_context(), provider)
    await raw.start()
    body = json.dumps({"aps": {"alert": {"title": "Flash sale", "body": "Everything -20% for an hour"}}}).encode()
    try:
        assert await raw.push(tokens[0], body) == 200  # connected outside the clock
        statuses: list[int] = []

        async def push(i: int) -> None:
            statuses.append(await raw.push(tokens[i], body))

        rate = await raw_rate(len(tokens), concurrency, push)
    finally:
        await raw.close()
    if set(statuses) != {200}:
        raise SystemExit(f"raw h2 baseline: answers {sorted(set(statuses))}")
    return len(tokens) / rate


async def pushes_received(emulator: ApnsEmulator, tokens: list[str], within: float) -> tuple[float, float]:
    """Wall-clock times of the first and last push to ``tokens`` once each has one (status 200)."""
    wanted = set(tokens)
    deadline = time.monotonic() + within
    while True:
        records = [r for r in emulator.received if r.token in wanted]
        if len({r.token for r in records}) >= len(wanted):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"{len({r.token for r in records})} of {len(wanted)} pushes after {within} s")
        await asyncio.sleep(0.1)
    bad = [r for r in records if r.status != 200]
    if bad or len(records) != len(wanted):
        raise SystemExit(f"{len(records)} pushes for {len(wanted)} tokens, {len(bad)} not 200")
    times = [r.received_at for r in records]
    return min(times), max(times)


# ---------------------------------------------------------------------------- the log and the read model


class Acceptances:
    """Tails the event log from its end: the distinct notifications accepted per bulk, and when."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=READER_FETCH_WAIT_MS
        )
        self.topic = topic
        self.accepted: dict[str, set[str]] = {}
        self.first_at: dict[str, float] = {}
        self.last_at: dict[str, float] = {}
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
        await self.consumer.seek_to_end(*tps)
        for tp in tps:  # resolved now, so nothing published after start() is skipped
            await self.consumer.position(tp)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.monotonic()
            for records in batch.values():
                for r in records:
                    value = r.value or b""
                    if b'"type":"notification.accepted"' not in value:
                        continue
                    bulk = _field(value, b"correlationid")
                    if bulk is None:
                        continue
                    self.accepted.setdefault(bulk, set()).add(_field(value, b"subject") or "")
                    self.first_at.setdefault(bulk, now)
                    self.last_at[bulk] = now

    async def wait(self, bulk: str, count: int, within: float) -> float:
        """Monotonic time the ``count``-th distinct acceptance of ``bulk`` was read."""
        deadline = time.monotonic() + within
        while len(self.accepted.get(bulk, ())) < count:
            if self._task is not None and self._task.done():
                self._task.result()
            if time.monotonic() > deadline:
                raise SystemExit(f"{len(self.accepted.get(bulk, ()))} of {count} accepted after {within} s")
            await asyncio.sleep(0.05)
        return self.last_at[bulk]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()


def _field(value: bytes, name: bytes) -> str | None:
    """A top-level string attribute of a compact CloudEvent (no full decode per record)."""
    marker = b'"' + name + b'":"'
    start = value.find(marker)
    if start < 0:
        return None
    start += len(marker)
    return value[start : value.index(b'"', start)].decode()


async def rows_of_bulk(database_url: str, bulk: str, count: int, within: float) -> float:
    """Monotonic time at which ``count`` notifications of ``bulk`` are rows in Postgres."""
    dsn = database_url.replace("+psycopg", "")
    deadline = time.monotonic() + within
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while True:
            cur = await conn.execute("SELECT count(*) FROM notifications WHERE correlation_id = %s", (bulk,))
            row = await cur.fetchone()
            seen = row[0] if row is not None else 0
            if seen >= count:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise SystemExit(f"only {seen} of {count} rows of bulk {bulk} visible after {within} s")
            await asyncio.sleep(0.1)


async def devices_projected(database_url: str, prefix: str, count: int, within: float) -> None:
    dsn = database_url.replace("+psycopg", "")
    deadline = time.monotonic() + within
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while True:
            cur = await conn.execute("SELECT count(*) FROM devices WHERE user_id LIKE %s", (prefix + "%",))
            row = await cur.fetchone()
            if row is not None and row[0] >= count:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"only {row[0] if row else 0} of {count} devices projected after {within} s")
            await asyncio.sleep(0.2)


async def register(settings: Settings, topic: str, devices: list[tuple[str, str]]) -> None:
    """``device.registered`` for each (user, token), appended to the event log."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, linger_ms=PRODUCER_LINGER_MS, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        now = datetime.now(UTC)
        futures = []
        for user, token in devices:
            env = Envelope(
                id=uuid7(), source="bench", time=now, data=DeviceRegistered(user, token), subject=None, userid=user
            )
            futures.append(await producer.send(topic, key=user.encode(), value=encode(env)))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def work_records(tokens: list[str], title: str, body: str) -> list[tuple[bytes, bytes]]:
    """The APNs work records a push bulk to ``tokens`` makes: each a ``notification.accepted``
    naming its token, keyed by its user, encoded as the worker's ingest encodes it."""
    now = datetime.now(UTC)
    bulk, tag = uuid7(), uuid.uuid4().hex[:6]
    records = []
    for i, token in enumerate(tokens):
        user, nid = f"bulkr-{tag}-{i}", uuid7()
        accepted = NotificationAccepted(
            notification_id=nid,
            user_id=user,
            title=title,
            body=body,
            priority="medium",
            channels=("apns",),
            category="",
            data={},
            requested_at=now,
            device_token=token,
        )
        env = Envelope(
            id=nid, source="herald/ingest", time=now, data=accepted, subject=nid, userid=user, correlationid=bulk
        )
        records.append((user.encode(), encode(env)))
    return records


async def put_work(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], bulk: Bulk) -> None:
    """Produce ``records`` to ``topic`` (``bulk.posted``: the first sent, ``bulk.answered``: all acked)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=PRODUCER_LINGER_MS, max_batch_size=16 * 1024)
    await producer.start()
    try:
        bulk.posted = time.monotonic()
        futures = [await producer.send(topic, key=key, value=value) for key, value in records]
        await asyncio.gather(*futures)
        bulk.answered = time.monotonic()
    finally:
        await producer.stop()


# ---------------------------------------------------------------------------- herald


@dataclass
class Bulk:
    """One measured bulk: monotonic times of its stages (``None``: not part of this measure)."""

    targets: int
    posted: float = 0.0
    answered: float = 0.0
    first_accepted: float = 0.0
    accepted: float = 0.0
    projected: float | None = None
    first_push: float | None = None
    last_push: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)
    load: float = 0.0
    answered_is: str = "POST answered (all on the broker)"
    """What ``answered`` is (``--work-records``: every work record on the broker)."""

    @property
    def done(self) -> float:
        return max(t for t in (self.accepted, self.projected, self.last_push) if t is not None)

    @property
    def seconds(self) -> float:
        return self.done - self.posted

    def stages(self) -> str:
        def at(t: float) -> str:
            return f"{t - self.posted:6.2f} s"

        parts = [f"{self.answered_is} {at(self.answered)}"]
        parts.append(f"first accepted {at(self.first_accepted)}, last accepted {at(self.accepted)}")
        if self.first_push is not None and self.last_push is not None:
            parts.append(f"first push {at(self.first_push)}, last push {at(self.last_push)}")
        if self.projected is not None:
            parts.append(f"all rows {at(self.projected)}")
        cpu = ", ".join(
            f"{name} {seconds:.1f} s ({seconds * 1000 / self.targets:.2f} ms each)"
            for name, seconds in self.cpu.items()
        )
        # CPU per notification is the figure a busy shared machine does not distort much.
        return "; ".join(parts) + f" | CPU: {cpu} | load average (1 min) at the end {self.load:.1f}"


async def post_bulk(http: aiohttp.ClientSession, base: str, body: dict[str, object], bulk: Bulk) -> str:
    bulk.posted = time.monotonic()
    async with http.post(f"{base}/api/notifications/bulk", json=body) as resp:
        answer = await resp.json()
        bulk.answered = time.monotonic()
    if resp.status != 202 or answer["requested"] != bulk.targets:
        raise SystemExit(f"bulk of {bulk.targets}: HTTP {resp.status} {str(answer)[:500]}")
    return str(answer["bulk_id"])


async def run_herald(
    bootstrap: str,
    database_url: str,
    emulator: ApnsEmulator,
    key_pem: str,
    tokens: list[str],
    args: argparse.Namespace,
    say: Callable[[str], None],
) -> tuple[Bulk | None, Bulk | None]:
    """The devices measure (unless ``--devices 0``), then the users measure (unless ``--users 0``),
    against the same role processes (``--workers`` workers in one group, a projector, an API)."""
    port = free_port()
    settings = bench_settings(
        bootstrap,
        database_url,
        redis_url=REDIS,
        jwt_secret=bench_secret(),
        http_port=port,
        producer_linger_ms=args.linger,
        kafka_fetch_max_wait_ms=args.fetch_wait,
        apns_key=key_pem,
        apns_key_id=KEY_ID,
        apns_team_id=TEAM_ID,
        apns_topic=TOPIC,
        apns_sandbox=True,
        apns_server=f"{emulator.address[0]}:{emulator.address[1]}",
        apns_ca_path=str(emulator.ca_path),
        apns_max_in_flight=args.in_flight,
    )
    await ensure_topics(settings)
    args.bootstrap, args.delivery_topic = bootstrap, f"{settings.topic_prefix}deliveries.apns"
    base = f"http://127.0.0.1:{port}"
    tag = uuid.uuid4().hex[:6]
    warm = [(f"bulkw-{tag}-{i}", uuid.uuid4().hex + uuid.uuid4().hex) for i in range(WARM_DEVICES)]
    devices = [(f"bulkd-{tag}-{i}", token) for i, token in enumerate(tokens)]
    log = Acceptances(bootstrap, f"{settings.topic_prefix}events")
    service = mint_token(settings, "bench-bulk", scopes=(SCOPE_WRITE,))
    timeout = aiohttp.ClientTimeout(total=900)
    async with contextlib.AsyncExitStack() as stack:
        projector = await stack.enter_async_context(role("projector", settings, tag="-bulk"))
        workers = [
            await stack.enter_async_context(
                role(
                    "worker",
                    settings,
                    tag=f"-bulk-{i}" if args.workers > 1 else "-bulk",
                    root=args.worker_tree,
                    cprofile=args.cprofile / f"worker{i + 1}.prof" if args.cprofile else None,
                )
            )
            for i in range(args.workers)
        ]
        api = await stack.enter_async_context(role("api", settings, tag="-bulk"))
        http = await stack.enter_async_context(
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {service}"}, timeout=timeout)
        )
        roles = [*workers, api, projector]
        if len(workers) > 1:  # distinct names for the CPU figures
            for i, worker in enumerate(workers):
                worker.name = f"worker{i + 1}"
        await wait_ready(base, api)
        await log.start()
        try:
            # Warm-up, not measured: a small bulk through every stage (group joins, connections, caches).
            if tokens:
                await register(settings, f"{settings.topic_prefix}events", warm + devices)
                await devices_projected(database_url, f"bulkw-{tag}-", len(warm), 300)
                await devices_projected(database_url, f"bulkd-{tag}-", len(devices), 300)
                warm_tokens = [t for _, t in warm]
                warmup = Bulk(len(warm_tokens))
                bulk_id = await post_bulk(http, base, {"device_tokens": warm_tokens, "title": "warm-up"}, warmup)
                await log.wait(bulk_id, len(warm_tokens), 300)
                await pushes_received(emulator, warm_tokens, 300)
                await rows_of_bulk(database_url, bulk_id, len(warm_tokens), 300)
                emulator.clear()
            else:
                # Enough users that every request partition (so every worker) sees some.
                warm_users = [f"bulkw-{tag}-{i}" for i in range(WARM_USERS)]
                warmup = Bulk(len(warm_users))
                body: dict[str, object] = {"user_ids": warm_users, "channels": ["websocket"], "title": "warm-up"}
                bulk_id = await post_bulk(http, base, body, warmup)
                await log.wait(bulk_id, len(warm_users), 300)
                await rows_of_bulk(database_url, bulk_id, len(warm_users), 300)
            # What the roles burn doing nothing (polls, timers): part of any bulk's CPU, per second of it.
            sampled = {r.name: r.pid for r in roles}
            broker = _child_named("tansu")
            if broker is not None:  # polled by every role's consumers, also while nothing is sent
                sampled["broker"] = broker
            idle_before = {name: cpu_seconds(pid) for name, pid in sampled.items()}
            await asyncio.sleep(IDLE_SAMPLE_SECONDS)
            idle = ", ".join(
                f"{name} {(cpu_seconds(pid) - idle_before[name]) * 1000 / IDLE_SAMPLE_SECONDS:.0f} ms/s"
                for name, pid in sampled.items()
            )
            say(f"idle CPU before the bulk: {idle}")

            pushes = None
            if tokens:
                say(f"{len(devices):,} devices registered and projected; measuring the push bulk")
                async with profiled(workers, args.profile, "devices", gil=args.profile_gil):
                    pushes = await _measure(roles, http, base, log, database_url, emulator, tokens, args)
                say(f"devices, {len(tokens):,}: {pushes.seconds:.2f} s; {pushes.stages()}")
            campaign = None
            for n in range(args.campaigns if args.users else 0):
                # Later campaigns run on a longer log and a fuller admission table (new users each time).
                prefix = f"bulku-{tag}-" if n == 0 else f"bulku-{tag}-{n}-"
                users = [f"{prefix}{i}" for i in range(args.users)]
                async with profiled(
                    workers, args.profile, "users" if n == 0 else f"users{n + 1}", gil=args.profile_gil
                ):
                    campaign = await _measure(roles, http, base, log, database_url, None, users, args)
                say(f"users, {len(users):,}: {campaign.seconds:.2f} s; {campaign.stages()}")
        finally:
            await log.stop()
    return pushes, campaign


@contextlib.asynccontextmanager
async def profiled(workers: list[Role], out: str | None, what: str, *, gil: bool = False) -> AsyncIterator[None]:
    """py-spy on every worker for the block (``out/<worker>-<what>.txt``, collapsed stacks); nothing without ``out``.

    ``gil``: only the thread holding the GIL is sampled (the interpreter's CPU, not threads
    waiting for a core or in a system call; ``--profile-gil``)."""
    if not out:
        yield
        return
    os.makedirs(out, exist_ok=True)
    procs = []
    for w in workers:
        command = [
            "py-spy",
            "record",
            "-r",
            "100",
            "-f",
            "raw",
            "-o",
            f"{out}/{w.name}-{what}.txt",
            "--pid",
            str(w.pid),
            *(["--gil"] if gil else []),
        ]
        devnull = asyncio.subprocess.DEVNULL
        procs.append(await asyncio.create_subprocess_exec(*command, stdout=devnull, stderr=devnull))
    await asyncio.sleep(1)  # attached before the bulk starts
    try:
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
            await proc.wait()


async def _measure(
    roles: list[Role],
    http: aiohttp.ClientSession,
    base: str,
    log: Acceptances,
    database_url: str,
    emulator: ApnsEmulator | None,
    targets: list[str],
    args: argparse.Namespace,
) -> Bulk:
    """One bulk: to device tokens (pushes awaited at ``emulator``) or to offline users (rows awaited)."""
    bulk = Bulk(len(targets))
    body: dict[str, object] = {"title": "Flash sale", "body": "Everything -20% for an hour"}
    if emulator is not None:
        body["device_tokens"] = targets
    else:
        body |= {"user_ids": targets, "channels": ["websocket"]}
        if args.priority:
            body["priority"] = args.priority
    cpu_before = {r.name: cpu_seconds(r.pid) for r in roles}
    broker = _child_named("tansu")  # the broker's share of the two cores, beside the roles'
    broker_before = cpu_seconds(broker) if broker is not None else 0.0
    wall, mono = time.time(), time.monotonic()
    if emulator is not None and args.work_records:
        work = work_records(targets, str(body["title"]), str(body["body"]))
        await put_work(args.bootstrap, args.delivery_topic, work, bulk)
        bulk.first_accepted = bulk.accepted = bulk.answered
        bulk.answered_is = "work records on the broker (no ingest)"
    else:
        bulk_id = await post_bulk(http, base, body, bulk)
        bulk.accepted = await log.wait(bulk_id, len(targets), args.within)
        bulk.first_accepted = log.first_at[bulk_id]
    if emulator is not None:
        first, last = await pushes_received(emulator, targets, args.within)
        bulk.first_push, bulk.last_push = mono + first - wall, mono + last - wall
    else:
        bulk.projected = await rows_of_bulk(database_url, bulk_id, len(targets), args.within)
    bulk.cpu = {r.name: cpu_seconds(r.pid) - cpu_before[r.name] for r in roles}
    workers = [r.name for r in roles if r.name.startswith("worker")]
    if len(workers) > 1:
        bulk.cpu["workers together"] = sum(bulk.cpu[name] for name in workers)
    if broker is not None:
        bulk.cpu["broker"] = cpu_seconds(broker) - broker_before
    bulk.load = os.getloadavg()[0]
    return bulk


# ---------------------------------------------------------------------------- report


@dataclass
class Result:
    pushes: Bulk | None
    """``None`` with ``--devices 0``."""
    campaign: Bulk | None
    """``None`` with ``--users 0``."""
    raw_push_seconds: float
    raw_loop_seconds: float


def _say(line: str) -> None:
    print(line, flush=True)  # progress shows up at once when the output goes to a file


async def measure(args: argparse.Namespace, say: Callable[[str], None] = _say) -> Result:
    """Baselines first (nothing else running), then Herald's two bulks, all on one broker."""
    if args.quick:
        args.devices, args.users = min(args.devices, 500), min(args.users, 5_000)
    tokens = [uuid.uuid4().hex + uuid.uuid4().hex for _ in range(args.devices)]
    private_pem, public_pem = generate_signing_key()
    emulator = ApnsEmulator(
        keys={KEY_ID: (TEAM_ID, public_pem)}, topics=[TOPIC], inspect_port=None, max_records=2 * args.devices + 1000
    )
    async with broker() as bootstrap, emulator:
        raw_push = 0.0
        if tokens:
            raw_push = await raw_pushes(emulator, private_pem, tokens, args.concurrency)
            emulator.clear()
            say(f"baseline: raw h2, {len(tokens):,} pushes in {raw_push:.2f} s")
        loop_seconds = 0.0
        if args.users:
            loop_args = argparse.Namespace(
                users=1000, rate=100.0, seconds=1.0, burst=args.users, linger=PRODUCER_LINGER_MS, fetch_wait=20
            )
            _, loop_rate = await run_baseline(bootstrap, loop_args, partitions=Settings().topic_partitions)
            loop_seconds = args.users / loop_rate
            say(f"baseline: raw aiokafka loop, {args.users:,} records in {loop_seconds:.2f} s")
        # scratch_database is annotated as an async iterator in common.py; it yields the URL.
        with scratch_database() as db:  # type: ignore[var-annotated]
            pushes, campaign = await run_herald(bootstrap, db, emulator, private_pem, tokens, args, say)
    return Result(pushes, campaign, raw_push, loop_seconds)


def rows(result: Result, args: argparse.Namespace) -> list[Row]:
    """Summary rows: measure, Herald, baseline, ratio (baseline time / Herald time), target."""
    p, c = result.pushes, result.campaign
    summary: list[Row] = []
    if p is not None:
        summary.append(
            (
                f"bulk to {args.devices:,} APNs device tokens: POST -> every push at the emulator",
                f"{p.seconds:.1f} s ({args.devices / p.seconds:,.0f}/s)",
                f"{result.raw_push_seconds:.1f} s (raw h2, {args.concurrency} in flight)",
                f"{result.raw_push_seconds / p.seconds:.2f}",
                "<= 20 s",
            )
        )
    if c is not None:
        workers = f", {args.workers} workers" if args.workers > 1 else ""
        summary.append(
            (
                f"bulk to {args.users:,} user_ids: POST -> all accepted and projected{workers}",
                f"{c.seconds:.1f} s ({args.users / c.seconds:,.0f}/s)",
                f"{result.raw_loop_seconds:.1f} s (raw aiokafka loop)",
                f"{result.raw_loop_seconds / c.seconds:.2f}",
                "<= 60 s",
            )
        )
    return summary


def _absolute(path: str) -> Path:
    return Path(path).resolve()


def _new_directory(path: str) -> Path:
    folder = Path(path).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=10_000, help="device tokens (one user each) in the push bulk")
    p.add_argument("--users", type=int, default=100_000, help="user_ids in the websocket bulk (0: skip it)")
    p.add_argument("--concurrency", type=int, default=100, help="pushes in flight for the raw h2 baseline")
    p.add_argument(
        "--in-flight", type=int, default=100, help="HERALD_APNS_MAX_IN_FLIGHT of the worker (1: one push at a time)"
    )
    p.add_argument("--workers", type=int, default=1, help="herald worker processes in one consumer group")
    p.add_argument("--profile", metavar="DIR", help="py-spy every worker during the measured bulks (stacks in DIR)")
    p.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only the thread holding the GIL (py-spy --gil)",
    )
    p.add_argument(
        "--cprofile",
        metavar="DIR",
        type=_new_directory,
        help="run every worker under cProfile (stats in DIR/worker<N>.prof, whole run: warm-up included)",
    )
    p.add_argument(
        "--worker-tree", metavar="DIR", type=_absolute, help="run the workers from this checkout of the project"
    )
    p.add_argument(
        "--work-records",
        action="store_true",
        help="the delivery side alone: the push bulk's work records put straight on the APNs delivery topic",
    )
    p.add_argument(
        "--priority",
        choices=("high", "medium", "low"),
        help="priority of the campaign's notifications (default: the bulk's own, medium)",
    )
    p.add_argument(
        "--campaigns",
        type=int,
        default=1,
        help="campaigns of --users new users, one after the other on the same roles and broker (the last is reported)",
    )
    p.add_argument(
        "--linger",
        type=int,
        default=PRODUCER_LINGER_MS,
        help="HERALD_PRODUCER_LINGER_MS of the roles (the benchmark's own producers keep %(default)s ms)",
    )
    p.add_argument(
        "--fetch-wait",
        type=int,
        default=20,
        help="HERALD_KAFKA_FETCH_MAX_WAIT_MS of the roles (Tansu holds a fetch for its whole wait; the tests use 20)",
    )
    p.add_argument("--within", type=float, default=900.0, help="seconds to wait for a stage before giving up")
    p.add_argument("--quick", action="store_true", help="smoke run: 500 devices, 5,000 users (not the targets' sizes)")
    return p


async def summary_rows(args: argparse.Namespace) -> list[Row]:
    """The summary rows of a run with ``args`` (of ``parser()``), for ``make bench``."""
    return rows(await measure(args), args)


async def main() -> None:
    args = parser().parse_args()
    result = await measure(args)
    print()
    for row in rows(result, args):
        print(" | ".join(row))


if __name__ == "__main__":
    asyncio.run(main())
