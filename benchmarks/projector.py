"""Projector throughput: a backlog of the event log applied into Postgres, and a full rebuild.

On one fresh Tansu broker, N synthetic but realistic events (``notification.accepted``
over many users, then their outcomes: ``delivery.succeeded`` or ``delivery.deferred``,
an email or APNs delivery for some, ``notification.read`` for a third, later in the log
as in production) are produced once onto a 4-partition event log. Then, per round:

(a) baseline: a raw aiokafka consumer reads the same N records (no decoding);
(b) ``herald projector`` in its own OS process, started on a scratch database with a
    fresh consumer group, timed from its first committed batch until its stored offsets
    reach the end of the log (the group join is not projection work), and from process
    start too; CPU seconds of the projector process and of its Postgres backends are
    read from /proc over the same span (start-up CPU left out, and printed with it too),
    so the cost per event is reported besides the (shared-machine) rate;
(c) ``herald rebuild`` of ``--rebuild-events`` events (a second log) as its own process,
    timed from start to exit (drop, migrate, replay, index builds, fingerprint), from start
    to the end of the replay (its last progress line), and the index builds after it.

    uv run python -m benchmarks.projector [--events 200000] [--rounds 3]
        [--rebuild-events 1000000] [--rebuild-rounds 1] [--rebuild-processes 1,2] [--users 10000]
        [--compare-tree DIR]

``--rebuild-processes`` passes ``--processes N`` to ``herald rebuild`` (default: none, the
command's own default); several values (``1,2``) are each measured in every rebuild round, in
alternating order. The rebuild's CPU is its process's and its children's (the replays of
``--processes N``, counted once they are reaped, before the index builds).

``--compare-tree DIR`` runs (b) and (c) with the ``herald`` of another checkout too (e.g. a
``git worktree`` of an older commit, on the same log and broker), alternating which of the two
goes first from round to round: on a shared machine compare the CPU per event, which load moves
less than the rates.

Producing the events costs about 25 us each (encode + produce): ~5 s for 200,000 and
~30 s for 1,000,000 on an idle 2-core machine. ``--rebuild-events 0`` skips (c).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import RecordMetadata

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import broker, scratch_database
from engine.topics import TopicNames
from projections.models import READ_MODELS, Base
from projections.rebuild import UNSTABLE_COLUMNS
from schemas.codec import encode
from schemas.envelope import Envelope
from schemas.events import (
    DeliveryDeferred,
    DeliverySucceeded,
    Event,
    NotificationAccepted,
    NotificationRead,
)
from schemas.ids import derived_id

PARTITIONS = 4
PRIORITIES = ("high", "medium", "low")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def events(seed: str, n: int, users: int) -> Iterator[tuple[bytes, bytes]]:
    """``n`` encoded events, keyed by user: about 2.5 per notification, outcomes 40 events later."""
    pending: list[tuple[int, Envelope]] = []  # (due index, envelope) of follow-up events
    produced = 0
    i = 0
    while produced < n:
        while pending and pending[0][0] <= produced and produced < n:
            yield _record(pending.pop(0)[1])
            produced += 1
        if produced >= n:
            break
        user = f"user-{(i * 7919) % users}"
        nid = derived_id(seed, "n", str(i))
        now = T0 + timedelta(milliseconds=i)
        channels = ("websocket", "email") if i % 7 == 0 else ("websocket", "apns") if i % 11 == 0 else ("websocket",)
        accepted = NotificationAccepted(
            notification_id=nid,
            user_id=user,
            title=f"Build {i} finished",
            body="Your deployment to production finished in 3m12s; 214 tests passed, 0 failed.",
            priority=PRIORITIES[i % 3],
            channels=channels,
            category="deploy",
            data={"build": i, "url": f"https://ci.example.com/builds/{i}"},
            requested_at=now,
        )
        yield _record(_env(seed, nid, 0, accepted, now))
        produced += 1
        follow: list[Event] = []
        if i % 4:
            follow.append(
                DeliverySucceeded(
                    notification_id=nid,
                    user_id=user,
                    channel="websocket",
                    target="gateway-1",
                    latency_ms=float(5 + i % 90),
                )
            )
        else:
            follow.append(DeliveryDeferred(notification_id=nid, user_id=user, channel="websocket", reason="offline"))
        for extra in channels[1:]:
            follow.append(
                DeliverySucceeded(
                    notification_id=nid,
                    user_id=user,
                    channel=extra,
                    target="alice@example.com" if extra == "email" else "a" * 64,
                    latency_ms=float(80 + i % 400),
                    provider_id=f"p-{i}",
                )
            )
        if i % 3 == 0:
            follow.append(NotificationRead(notification_id=nid, user_id=user))
        for k, event in enumerate(follow, start=1):
            pending.append((produced + 40 * k, _env(seed, nid, k, event, now + timedelta(seconds=k))))
        i += 1


def _env(seed: str, nid: str, k: int, event: Event, when: datetime) -> Envelope:
    user = getattr(event, "user_id", None)
    return Envelope(id=derived_id(seed, nid, str(k)), source="bench", time=when, data=event, subject=nid, userid=user)


def _record(env: Envelope) -> tuple[bytes, bytes]:
    return (env.userid or "").encode(), encode(env)


async def produce(
    bootstrap: str, topic: str, n: int, users: int, seed: str, acked: dict[int, int] | None = None
) -> float:
    """Create ``topic`` and append ``n`` events; return the seconds it took. ``acked``: filled with
    each partition's end after the acknowledged appends (what ``end_offsets`` must reach)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()
    started = time.perf_counter()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        futures = []
        ends = acked if acked is not None else {}
        for key, value in events(seed, n, users):
            futures.append(await producer.send(topic, key=key, value=value))
            if len(futures) >= 20_000:
                _note_ends(ends, await asyncio.gather(*futures))
                futures.clear()
        _note_ends(ends, await asyncio.gather(*futures))
    finally:
        await producer.stop()
    return time.perf_counter() - started


def _note_ends(ends: dict[int, int], acknowledged: list[RecordMetadata]) -> None:
    for metadata in acknowledged:
        ends[metadata.partition] = max(ends.get(metadata.partition, 0), metadata.offset + 1)


async def end_offsets(bootstrap: str, topic: str, acked: dict[int, int] | None = None) -> dict[int, int]:
    """The topic's end offsets, at least the ends of the appends ``acked`` (see ``produce``): Tansu
    reports the base offset of a partition's last record batch + 1, short of its end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}
        return {p: max(end, (acked or {}).get(p, 0)) for p, end in ends.items()}
    finally:
        await consumer.stop()


async def raw_consume(bootstrap: str, topic: str, n: int) -> float:
    """Events/s of a bare aiokafka consumer reading the ``n`` records (no decoding)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        started = time.perf_counter()
        while seen < n:
            polled = await consumer.getmany(timeout_ms=1000, max_records=2000)
            seen += sum(len(r) for r in polled.values())
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def herald_env(bootstrap: str, prefix: str, database_url: str, group: str) -> dict[str, str]:
    """Environment of a ``herald`` subprocess: production settings, except the Tansu fetch wait."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.update(
        HERALD_KAFKA_BOOTSTRAP=bootstrap,
        HERALD_TOPIC_PREFIX=prefix,
        HERALD_DATABASE_URL=database_url,
        HERALD_PROJECTOR_GROUP=group,
        HERALD_JWT_SECRET=secrets.token_hex(32),
        HERALD_LOG_LEVEL="WARNING",
        HERALD_KAFKA_FETCH_MAX_WAIT_MS="20",  # Tansu holds a fetch for its whole max wait
        HERALD_KAFKA_SESSION_TIMEOUT="6",
        HERALD_KAFKA_HEARTBEAT_INTERVAL="1",
        HERALD_KAFKA_REBALANCE_TIMEOUT="6",
    )
    return env


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU seconds of a process (0 once it is gone); ``children``: plus those of
    its children it has waited for."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def backend_cpu(dsn: str, database: str) -> float:
    """CPU seconds of every Postgres backend connected to ``database`` (they live as long as the pool)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [database])]
        own = conn.execute("SELECT pg_backend_pid()").fetchone()
    return sum(cpu_seconds(pid) for pid in pids if own is None or pid != own[0])


class BackendCpuSampler:
    """CPU seconds of the Postgres backends of ``database``, including those that disconnected
    since (the connections of ``herald rebuild --processes N``'s children end with them): each
    backend's CPU is sampled every ``interval`` seconds in a thread and its last sample kept."""

    def __init__(self, dsn: str, database: str, interval: float = 0.2) -> None:
        self._dsn, self._database, self._interval = dsn, database, interval
        self._seen: dict[int, float] = {}
        self.herald: int | None = None
        """A ``herald`` process whose and whose children's time queued for a CPU is sampled too."""
        self._queued: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backend-cpu", daemon=True)

    def __enter__(self) -> BackendCpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def total(self) -> float:
        """Summed CPU of every backend seen so far (the live ones sampled now)."""
        self._sample_with(None)
        return sum(self._seen.values())

    def _run(self) -> None:
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            while not self._stop.wait(self._interval):
                self._sample_with(conn)

    def queued(self) -> float:
        """Seconds the ``herald`` process and its children were runnable but waiting for a CPU
        (``/proc/PID/schedstat``): how much a shared machine held them back."""
        self._sample_herald()
        return sum(self._queued.values())

    def _sample_herald(self) -> None:
        if self.herald is None:
            return
        pids = [self.herald]
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{self.herald}/task").iterdir():
                pids += [int(p) for p in (task / "children").read_text().split()]
        for pid in pids:
            with contextlib.suppress(OSError, ValueError):
                waited = int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
                self._queued[pid] = max(waited, self._queued.get(pid, 0.0))

    def _sample_with(self, conn: psycopg.Connection[tuple[int]] | None) -> None:
        if conn is None:
            with psycopg.connect(self._dsn, autocommit=True) as own:
                return self._sample_with(own)
        self._sample_herald()
        pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [self._database])]
        mine = conn.execute("SELECT pg_backend_pid()").fetchone()
        for pid in pids:
            if mine is not None and pid == mine[0]:
                continue
            cpu = cpu_seconds(pid)
            if cpu:
                self._seen[pid] = max(cpu, self._seen.get(pid, 0.0))
        return None


def stored(dsn: str, topic: str) -> int:
    """Sum of the projector's stored next offsets for ``topic`` (0 before its first commit)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('projector_offsets')").fetchone()
        if not exists or exists[0] is None:
            return 0
        row = conn.execute("SELECT coalesce(sum(next_offset), 0) FROM projector_offsets WHERE topic = %s", [topic])
        value = row.fetchone()
        return int(value[0]) if value else 0


def read_model_digests(dsn: str) -> dict[str, str]:
    """Per read model ``rows:digest`` (the sum of its rows' MD5s, as ``herald rebuild``'s fingerprint
    computes it, unstable columns left out): the same log must give the same digests whatever the
    code that projected it (``--compare-tree``)."""
    out = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        for name in READ_MODELS:
            table = Base.metadata.tables[name]
            columns = ", ".join(f'"{c.name}"' for c in table.columns if (name, c.name) not in UNSTABLE_COLUMNS)
            row_hash = f"('x' || substr(md5(ROW({columns})::text), 1, 15))::bit(60)::bigint"
            row = conn.execute(f"SELECT count(*), coalesce(sum({row_hash}), 0) FROM {name}").fetchone()
            assert row is not None
            out[name] = f"{int(row[0])}:{int(row[1]):x}"
    return out


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], cwd: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def projector_round(
    bootstrap: str, prefix: str, topic: str, n: int, total: int, tree: str | None = None
) -> dict[str, float]:
    """(b): ``herald projector`` as a process until its offsets reach ``total``; ``tree``: run
    the ``herald`` of another source tree (e.g. an older commit) instead of this one."""
    scratch: contextlib.AbstractContextManager[str] = scratch_database()
    with scratch as url:
        dsn = url.replace("+psycopg", "")
        database = dsn.rsplit("/", 1)[1]
        env = herald_env(bootstrap, prefix, url, f"bench-projector-{secrets.token_hex(4)}")
        if tree:
            env["PYTHONPATH"] = tree
        started = time.perf_counter()
        with process([sys.executable, "-m", "herald.cli", "projector"], env, cwd=tree) as proc:
            first = None
            while True:
                if proc.poll() is not None:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    raise RuntimeError(f"herald projector exited {proc.returncode}: {out[-2000:]}")
                done = stored(dsn, topic)
                now = time.perf_counter()
                if done and first is None:
                    # CPU spent so far is start-up (imports, migrations, group join): left out.
                    first = (now, done, cpu_seconds(proc.pid), backend_cpu(dsn, database))
                if done >= total:
                    break
                time.sleep(0.05)
            cpu = cpu_seconds(proc.pid)
            pg_cpu = backend_cpu(dsn, database)
        digests = read_model_digests(dsn)
        print(f"    read models ({tree or 'herald'}): {' '.join(f'{k}={v}' for k, v in digests.items())}", flush=True)
        assert first is not None
        timed = max(n - first[1], 1)
        return {
            "rate": timed / max(now - first[0], 1e-9),
            "rate_with_start": n / (now - started),
            "cpu_us": (cpu - first[2]) / timed * 1e6,
            "pg_cpu_us": (pg_cpu - first[3]) / timed * 1e6,
            "cpu_with_start_us": cpu / n * 1e6,
        }


def rebuild_round(
    bootstrap: str, prefix: str, n: int, tree: str | None = None, processes: int | None = None
) -> dict[str, float]:
    """(c): ``herald rebuild`` as a process on a scratch database; ``tree``: the ``herald`` of
    another source tree; ``processes``: its ``--processes`` (default: none given).

    The replay ends with the last progress line (printed as the replay returns); the
    command then computes and prints the read models' fingerprint and exits. CPU seconds of
    the process (and its reaped children: ``--processes``) and its Postgres backends (sampled
    all along: a child's connections end with it) are read when the first index-build line
    comes (the replay is over): per event, start-up included (2-3 s of the process's, and
    about as much per child). So is the time its processes spent runnable but waiting for a
    CPU (``/proc/PID/schedstat``): on a shared machine, how far the wall times are from its own.
    """
    scratch: contextlib.AbstractContextManager[str] = scratch_database()
    with scratch as url:
        dsn = url.replace("+psycopg", "")
        database = dsn.rsplit("/", 1)[1]
        env = herald_env(bootstrap, prefix, url, "unused")
        if tree:
            env["PYTHONPATH"] = tree
        started = time.perf_counter()
        replayed = indexed = None
        cpu = pg_cpu = queued = float("nan")
        command = [sys.executable, "-m", "herald.cli", "rebuild"]
        if processes is not None:
            command += ["--processes", str(processes)]
        with BackendCpuSampler(dsn, database) as backends, process(command, env, cwd=tree) as proc:
            assert proc.stdout is not None
            backends.herald = proc.pid
            lines = []
            for raw in proc.stdout:
                line = raw.decode().rstrip()
                lines.append(line)
                if line.startswith("replaying the event log:"):
                    replayed = time.perf_counter() - started
                    print(f"    {line}", flush=True)
                elif line.startswith("building indexes:"):
                    if indexed is None:
                        cpu, pg_cpu = cpu_seconds(proc.pid, children=True), backends.total()
                        queued = backends.queued()
                    indexed = time.perf_counter() - started
                    print(f"    {line}", flush=True)
            code = proc.wait()
        total = time.perf_counter() - started
        if code != 0 or replayed is None or not lines[-1].startswith("replayed "):
            raise RuntimeError(f"herald rebuild exited {code}: {lines[-20:]}")
        return {
            "seconds": total,
            "replay_seconds": replayed,
            "index_seconds": (indexed - replayed) if indexed is not None else 0.0,
            "rate": n / replayed,
            "cpu_us": cpu / n * 1e6,
            "pg_cpu_us": pg_cpu / n * 1e6,
            "queued_seconds": queued,
        }


Row = tuple[str, str, str, str, str]
"""(measure, herald, baseline, ratio, target): a row of ``make bench``'s summary table."""


def parser() -> argparse.ArgumentParser:
    """The program's options (``benchmarks.suite`` builds its arguments with it)."""
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--events", type=int, default=200_000, help="backlog for (a) and (b)")
    cli.add_argument("--rounds", type=int, default=3)
    cli.add_argument("--users", type=int, default=10_000)
    cli.add_argument("--rebuild-events", type=int, default=1_000_000, help="log size for (c); 0 skips it")
    cli.add_argument("--rebuild-rounds", type=int, default=1)
    cli.add_argument(
        "--rebuild-processes",
        type=_counts,
        default=[],
        help="--processes of herald rebuild (default: the command's own); several, comma separated (1,2),"
        " are each measured in every rebuild round, in alternating order",
    )
    cli.add_argument(
        "--compare-tree",
        help="also run (b) and (c) with the herald of this source tree (e.g. `git archive <commit> | tar -x -C DIR`),"
        " alternating which of the two goes first in each round",
    )
    cli.add_argument("--quick", action="store_true", help="a smoke run: 20,000 events, one round, rebuild 50,000")
    return cli


def _counts(value: str) -> list[int]:
    counts = [int(v) for v in value.split(",") if v.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("one or more positive integers, comma separated")
    return counts


async def summary_rows(args: argparse.Namespace) -> list[Row]:
    """Run the measures; the rows of ``make bench``'s summary table."""
    figures = await measure(args)
    rows: list[Row] = [
        (
            f"projector process, {figures['events']:,.0f}-event backlog",
            f"{figures['rate']:,.0f} events/s",
            f"{figures['raw']:,.0f} raw consume",
            f"{figures['rate'] / figures['raw']:.3f}",
            ">= 20,000 events/s",
        )
    ]
    if "rebuild_seconds" in figures:
        rows.append(
            (
                f"herald rebuild of {figures['rebuild_events']:,.0f} events",
                f"{figures['rebuild_seconds']:.1f} s",
                "",
                "",
                "<= 60 s for 1,000,000",
            )
        )
    return rows


async def main() -> None:
    await measure(parser().parse_args())


async def measure(args: argparse.Namespace) -> dict[str, float]:
    """The three measures, printed as they come and summarised; the medians."""
    if args.quick:
        args.events, args.rounds, args.rebuild_events = 20_000, 1, 50_000
    async with broker() as bootstrap:
        prefix = f"bench{secrets.token_hex(3)}."
        topic = TopicNames(prefix).events
        acked: dict[int, int] = {}
        seconds = await produce(bootstrap, topic, args.events, args.users, "backlog", acked)
        ends = await end_offsets(bootstrap, topic, acked)
        total = sum(ends.values())
        print(f"produced {total:,} events over {args.users:,} users in {seconds:.1f} s", flush=True)
        raw: list[float] = []
        projected: list[dict[str, float]] = []
        compared: list[dict[str, float]] = []
        for r in range(args.rounds):
            raw.append(await raw_consume(bootstrap, topic, total))
            order = [None, args.compare_tree] if args.compare_tree else [None]
            for tree in order if r % 2 == 0 else order[::-1]:  # alternating who goes first
                results = compared if tree else projected
                results.append(await asyncio.to_thread(projector_round, bootstrap, prefix, topic, total, total, tree))
                print(
                    f"  round {r + 1}: {tree or 'herald'} projector {results[-1]['rate']:,.0f} events/s"
                    f" ({results[-1]['rate_with_start']:,.0f} with start-up); CPU per event: projector"
                    f" {results[-1]['cpu_us']:.0f} us, Postgres {results[-1]['pg_cpu_us']:.0f} us",
                    flush=True,
                )
            print(f"  round {r + 1}: raw consume {raw[-1]:,.0f} events/s", flush=True)
        # (label, tree, --processes): the first is the one the summary row reports.
        variants: list[tuple[str, str | None, int | None]] = [
            (f"herald --processes {p}", None, p) for p in args.rebuild_processes
        ] or [("herald", None, None)]
        if args.compare_tree:
            variants.append((args.compare_tree, args.compare_tree, None))
        rebuilds: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in variants}
        if args.rebuild_events:
            rprefix = f"rebuild{secrets.token_hex(3)}."
            seconds = await produce(bootstrap, TopicNames(rprefix).events, args.rebuild_events, args.users, "rebuild")
            print(f"produced {args.rebuild_events:,} events for the rebuild in {seconds:.1f} s", flush=True)
            for r in range(args.rebuild_rounds):
                for label, tree, processes in variants if r % 2 == 0 else variants[::-1]:  # alternating who goes first
                    results = rebuilds[label]
                    results.append(
                        await asyncio.to_thread(rebuild_round, bootstrap, rprefix, args.rebuild_events, tree, processes)
                    )
                    print(
                        f"  rebuild round {r + 1} ({label}): {results[-1]['seconds']:.1f} s in"
                        f" all, replay {results[-1]['replay_seconds']:.1f} s ({results[-1]['rate']:,.0f} events/s),"
                        f" then indexes {results[-1]['index_seconds']:.1f} s; CPU per event to the replay's end:"
                        f" herald {results[-1]['cpu_us']:.0f} us, Postgres {results[-1]['pg_cpu_us']:.0f} us;"
                        f" herald queued for a CPU {results[-1]['queued_seconds']:.1f} s (summed over its processes)",
                        flush=True,
                    )

    def med(values: list[float]) -> float:
        return statistics.median(values)

    raw_rate = med(raw)
    rate = med([p["rate"] for p in projected])
    print(f"\n== Projector, {total:,}-event backlog, median of {args.rounds} rounds ==")
    print(f"  (a) raw aiokafka consume       {raw_rate:12,.0f} events/s   1")
    print(f"  (b) herald projector process   {rate:12,.0f} events/s   {rate / raw_rate:.3f} of raw  (target 20,000)")
    print(f"      with process start-up      {med([p['rate_with_start'] for p in projected]):12,.0f} events/s")
    print(
        f"      CPU per event              projector {med([p['cpu_us'] for p in projected]):.0f} us,"
        f" Postgres {med([p['pg_cpu_us'] for p in projected]):.0f} us"
        f" (projector with start-up {med([p['cpu_with_start_us'] for p in projected]):.0f} us)"
    )
    if compared:
        other = med([p["rate"] for p in compared])
        print(f"  (b) at {args.compare_tree:<21}{other:12,.0f} events/s   {other / raw_rate:.3f} of raw")
        print(
            f"      CPU per event              projector {med([p['cpu_us'] for p in compared]):.0f} us,"
            f" Postgres {med([p['pg_cpu_us'] for p in compared]):.0f} us"
        )
    for label, rounds in rebuilds.items():
        if not rounds:
            continue
        print(f"  (c) rebuild of {args.rebuild_events:,} events, {label} (target 60 s)")
        print(f"      whole command              {med([r['seconds'] for r in rounds]):10.1f} s")
        print(
            f"      until the replay ended     {med([r['replay_seconds'] for r in rounds]):10.1f} s"
            f"   {med([r['rate'] for r in rounds]):,.0f} events/s"
        )
        print(f"      then the indexes built in  {med([r['index_seconds'] for r in rounds]):10.1f} s")
        print(
            f"      CPU per event to the replay's end: herald {med([r['cpu_us'] for r in rounds]):.0f} us,"
            f" Postgres {med([r['pg_cpu_us'] for r in rounds]):.0f} us (start-up included)"
        )
        print(
            f"      herald queued for a CPU      {med([r['queued_seconds'] for r in rounds]):10.1f} s (a busy machine)"
        )
    rebuilt = rebuilds[variants[0][0]]
    figures = {"events": float(total), "raw": raw_rate, "rate": rate}
    if rebuilt:
        figures.update(rebuild_events=float(args.rebuild_events), rebuild_seconds=med([r["seconds"] for r in rebuilt]))
    return figures


if __name__ == "__main__":
    asyncio.run(main())
