"""The fault suite's topology: every role a real OS process, users and load from outside, and one checker.

Scenarios need the same cluster again and again (three ``herald worker``, two ``herald
projector``, two ``herald api`` processes on real Postgres, Redis and Tansu, the SMTP
server and the APNs emulator), the same users (WebSocket clients that resume on the other
gateway with ``since=`` like the demo page, and offline users), the same steady load, and
the same question afterwards: was every accepted notification decided once, projected
once, delivered once per connection and per channel, and counted once? This module
builds all that once per session (group joins on Tansu are slow) and answers the
question after every scenario (``Topology.check``), with the scenario's figures: time
to recover from a death and the latency percentiles of the notifications sent meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from api.auth import mint_token
from engine.settings import Settings
from engine.topics import TopicNames
from herald.apns_emulator import ApnsEmulator
from herald.broker import free_port
from herald.smtp_capture import SmtpCapture
from schemas.ids import derived_id
from tests.support.clients import missed_notifications
from tests.support.kafka import request
from tests.support.log_reader import log_records
from tests.support.processes import ROOT, role_env, start_role
from tests.support.waiting import eventually

WORKERS = int(os.environ.get("HERALD_FAULTS_WORKERS", "3"))
PROJECTORS = int(os.environ.get("HERALD_FAULTS_PROJECTORS", "2"))
GATEWAYS = int(os.environ.get("HERALD_FAULTS_GATEWAYS", "2"))
ONLINE_USERS = int(os.environ.get("HERALD_FAULTS_ONLINE_USERS", "50"))
OFFLINE_USERS = int(os.environ.get("HERALD_FAULTS_OFFLINE_USERS", "4"))
RATE = float(os.environ.get("HERALD_FAULTS_RATE", "30"))
"""Requests per second of the steady load, spread evenly over the three priorities."""
PARTITIONS = 6
"""Two partitions per worker: a death moves work, it does not just idle a consumer."""
PRIORITIES = ("high", "medium", "low")
DECISIONS = frozenset(
    {"notification.accepted", "notification.rejected", "notification.duplicate", "notification.rate_limited"}
)
SETTLE_TIMEOUT = float(os.environ.get("HERALD_FAULTS_SETTLE_TIMEOUT", "90"))
IN_FLIGHT = 1.0
"""Seconds before a worker's death within which a send's first copy counts as in flight (provider round trip
plus the produce of its "sent" record, on the loaded machine)."""


def partition_of(user: str, partitions: int = PARTITIONS) -> int:
    """The partition a user's records land in (Kafka's default murmur2 partitioner, as Herald's producers use)."""
    all_partitions = list(range(partitions))
    return int(DefaultPartitioner()(user.encode(), all_partitions, all_partitions))


def device_token(user: str) -> str:
    """A stable 64-hex APNs device token per user."""
    return hashlib.sha256(user.encode()).hexdigest()


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (``nan`` for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Role:
    """One ``herald`` process of the topology (restartable with the same settings and log)."""

    kind: str
    index: int
    settings: Settings
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    expected_alive: bool = True
    deaths: list[float] = field(default_factory=list)
    """Wall-clock times (epoch seconds) of the kills, to compare with the servers' receipt times."""

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.index}"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}"

    def start(self) -> None:
        self.proc = start_role(self.kind, self.settings, self.log)
        self.expected_alive = True

    def kill(self) -> float:
        """SIGKILL; returns the monotonic time of death."""
        assert self.proc is not None and self.proc.poll() is None, f"{self.name} is not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.deaths.append(time.time())
        self.expected_alive = False
        return time.monotonic()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Sent:
    """One request the load (or the bulk) published: what a user must eventually see."""

    nid: str
    user: str
    priority: str
    channels: tuple[str, ...]
    at: float
    """Monotonic time just before publishing."""


@dataclass
class Report:
    """What one scenario measured (printed, and kept for docs/reliability.md)."""

    scenario: str
    notifications: int
    """Accepted notifications checked so far (cumulative over the session)."""
    sent_in_scenario: int
    recover_seconds: float | None = None
    """Death -> deliveries flowing again on every partition (the slowest partition)."""
    p50: float = math.nan
    p99: float = math.nan
    max_latency: float = math.nan
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        parts = [
            f"[faults] {self.scenario}: {self.sent_in_scenario} sent, {self.notifications} checked in all",
            f"recover {self.recover_seconds:.2f} s" if self.recover_seconds is not None else "recover n/a",
            f"latency p50 {self.p50:.3f} s p99 {self.p99:.3f} s max {self.max_latency:.3f} s",
        ]
        parts += [f"{k} {v}" for k, v in self.extra.items()]
        return "; ".join(parts)


class WsClient:
    """One online user's browser tab: like ``api/static/demo.js``, it resumes with ``since=`` the last id
    it saw, on the *other* gateway, when its connection goes away. Every connection's ids are kept in order."""

    def __init__(self, topo: Topology, user: str, gateway: int) -> None:
        self.topo = topo
        self.user = user
        self.gateway = gateway
        self.token = mint_token(topo.settings, user)
        self.connections: list[list[str]] = []
        self.last_seen: str | None = None
        self.live = asyncio.Event()
        self.reconnected_at: list[float] = []
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._stopped = False
        self._task: asyncio.Task[None] | None = None

    def start(self, http: aiohttp.ClientSession) -> None:
        self._task = asyncio.create_task(self._run(http), name=f"ws-{self.user}")

    def seen(self) -> set[str]:
        return {nid for ids in self.connections for nid in ids}

    async def _run(self, http: aiohttp.ClientSession) -> None:
        delay = 0.1
        while not self._stopped:
            gateway = self.topo.gateways[self.gateway]
            url = gateway.base.replace("http", "ws", 1) + f"/ws/notifications?token={self.token}"
            if self.last_seen:
                url += f"&since={self.last_seen}"
            ids: list[str] = []
            try:
                async with http.ws_connect(url, heartbeat=None, timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
                    self._ws = ws
                    self.connections.append(ids)
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        now = time.monotonic()
                        frame = orjson.loads(msg.data)
                        if frame.get("type") == "notification":
                            self._got(ids, frame["notification"]["id"], now)
                        elif frame.get("type") == "missed_notifications":
                            for item in frame["notifications"]:
                                self._got(ids, item["id"], now)
                            if not frame.get("more"):
                                delay = 0.1
                                if len(self.connections) > 1:
                                    self.reconnected_at.append(now)
                                self.live.set()
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            finally:
                self._ws = None
            if self._stopped:
                return
            self.live.clear()
            self.gateway = (self.gateway + 1) % len(self.topo.gateways)  # theirs went away: the other one
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _got(self, ids: list[str], nid: str, now: float) -> None:
        ids.append(nid)
        self.last_seen = nid
        self.topo.received_at.setdefault(nid, now)

    async def stop(self) -> None:
        self._stopped = True
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 10)
            except TimeoutError:
                self._task.cancel()


class Load:
    """Steady requests on all three priorities, straight to the request topics as producers publish them."""

    def __init__(self, topo: Topology, rate: float) -> None:
        self.topo = topo
        self.rate = rate
        self.running = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._count = 0
        self.errors: list[str] = []

    async def start(self) -> None:
        # One record per batch, like the roles on Tansu (its end offsets are wrong for multi-record batches).
        settings = self.topo.settings
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, linger_ms=2, max_batch_size=settings.producer_max_batch_size
        )
        await self._producer.start()
        self._task = asyncio.create_task(self._run(), name="load")

    async def _run(self) -> None:
        assert self._producer is not None
        names = TopicNames(self.topo.settings.topic_prefix)
        users = self.topo.all_users
        owed = 0.0
        tick = 0.1
        while True:
            await self.running.wait()
            started = time.monotonic()
            owed += self.rate * tick
            sends = []
            while owed >= 1:
                owed -= 1
                i = self._count
                self._count += 1
                user = users[i % len(users)]
                priority = PRIORITIES[i % 3]
                extra: dict[str, Any] = {"priority": priority}
                channels: tuple[str, ...] = ("websocket",)
                if i % 20 == 7:
                    channels = ("websocket", "email")
                    extra["email"] = f"{user}@herald.test"
                elif i % 20 == 13:
                    channels = ("websocket", "apns")
                    extra["device_token"] = device_token(user)
                body = request(user, f"load {i}", channels=list(channels), **extra)
                nid = str(body["id"])
                self.topo.sent.append(Sent(nid, user, priority, channels, time.monotonic()))
                sends.append(await self._producer.send(names.request(priority), orjson.dumps(body), key=user.encode()))
            if sends:
                await asyncio.gather(*sends)
            await asyncio.sleep(max(0.0, tick - (time.monotonic() - started)))

    async def pause(self) -> None:
        """Stop sending (after the requests of the current tick are on the broker)."""
        self.running.clear()
        await asyncio.sleep(0.3)

    def resume(self) -> None:
        self.running.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._producer is not None:
            await self._producer.stop()


class RequestTail:
    """A consumer of its own that tails the request topics from the start of the topology: which offsets of a
    partition did a live reader see jump over (handed offset N+1 before N)? Any jump on these topics (written
    without transactions, never compacted) is the broker's: a Kafka consumer that got N+1 never reads N."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.jumps: list[tuple[str, int, int, int]] = []
        """(topic, partition, first offset jumped over, last offset jumped over)."""
        self.records = 0
        self._last: dict[tuple[str, int], int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self.topo.settings
        names = TopicNames(settings.topic_prefix)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100
        )
        await self._consumer.start()
        tps = [TopicPartition(t, p) for t in names.requests for p in range(PARTITIONS)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._run(), name="request-tail")

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                for r in records:
                    key = (tp.topic, tp.partition)
                    expected = self._last.get(key, -1) + 1
                    if r.offset > expected:
                        self.jumps.append((tp.topic, tp.partition, expected, r.offset - 1))
                    self._last[key] = max(self._last.get(key, -1), r.offset)
                    self.records += 1

    def jumped_over(self, topic: str, partition: int, offset: int) -> bool:
        return any(t == topic and p == partition and lo <= offset <= hi for t, p, lo, hi in self.jumps)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


async def read_to_end(
    bootstrap: str, topics: Iterable[str], timeout: float = 120
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topics`` up to their end offsets of now, read with a fresh consumer (unlike "until a
    fetch returns nothing", a slow fetch on a loaded machine cannot cut it short)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    out: list[ConsumerRecord[bytes, bytes]] = []
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"reading {list(topics)} to their end offsets took over {timeout} s"
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out += records
        return out
    finally:
        await consumer.stop()


def decoded(records: Iterable[ConsumerRecord[bytes, bytes]]) -> list[dict[str, Any]]:
    """The JSON records among ``records`` (anything else, such as poison, left out)."""
    out: list[dict[str, Any]] = []
    for r in records:
        with contextlib.suppress(ValueError, TypeError):
            value = orjson.loads(r.value or b"null")
            if isinstance(value, dict):
                out.append(value)
    return out


async def locate(bootstrap: str, topics: Iterable[str], nids: set[str]) -> dict[str, tuple[str, int, int]]:
    """Where each of ``nids`` sits in the request topics: (topic, partition, offset)."""
    found: dict[str, tuple[str, int, int]] = {}
    for r in await read_to_end(bootstrap, topics):
        [value] = decoded([r]) or [{}]
        nid = str(value.get("id"))
        if nid in nids:
            found[nid] = (r.topic, r.partition, r.offset)
    return found


class Topology:
    """The running cluster, its users and its load; ``check()`` after each scenario."""

    def __init__(
        self,
        settings: Settings,
        *,
        smtp: SmtpCapture,
        emulator: ApnsEmulator,
        output_dir: Path,
        worker_overrides: dict[str, Any] | None = None,
        projector_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.smtp = smtp
        self.emulator = emulator
        self.output_dir = output_dir
        tag = settings.topic_prefix.strip(".")
        self.online = [f"{tag}-on-{i}" for i in range(ONLINE_USERS)]
        self.offline = [f"{tag}-off-{i}" for i in range(OFFLINE_USERS)]
        self.all_users = self.online + self.offline
        self.workers = [
            Role("worker", i, settings.replace(**(worker_overrides or {})), output_dir / f"faults-worker-{i}.log")
            for i in range(WORKERS)
        ]
        self.projectors = [
            Role(
                "projector",
                i,
                settings.replace(**(projector_overrides or {})),
                output_dir / f"faults-projector-{i}.log",
            )
            for i in range(PROJECTORS)
        ]
        self.gateways = [
            Role(
                "api",
                i,
                settings.replace(http_port=free_port(), node_id=f"{settings.topic_prefix}gw{i}"),
                output_dir / f"faults-api-{i}.log",
            )
            for i in range(GATEWAYS)
        ]
        self.clients: dict[str, WsClient] = {}
        self.sent: list[Sent] = []
        self.received_at: dict[str, float] = {}
        self.offline_seen: dict[str, Counter[str]] = {u: Counter() for u in self.offline}
        self.offline_replayed: set[str] = set()
        self.http: aiohttp.ClientSession | None = None
        self.load = Load(self, RATE)
        self.tail = RequestTail(self)
        self.checked_upto = 0
        self.reports: list[Report] = []
        self.reported_twice: set[str] = set()
        """Emails and pushes a check already judged for having been sent twice."""
        self.in_flight_resends: list[str] = []
        """Second copies of a send in flight at a worker's death (same id), with how long before it."""
        self.poison_users: list[str] = []
        """Users of poison requests (``test_poison``): their rows are refused requests, not notifications."""
        self.latencies: list[float] = []
        self.admin = mint_token(settings, "faults-ops", scopes=("admin",))
        self.writer = mint_token(settings, "faults-producer", scopes=("notifications:write",))

    @property
    def roles(self) -> list[Role]:
        return [*self.workers, *self.projectors, *self.gateways]

    # -- start and stop ---------------------------------------------------------------------------

    async def start(self) -> None:
        for log in self.output_dir.glob("faults-*.log"):
            log.unlink()
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        # Gateways first, one after the other: each runs the (idempotent) migration and creates the topics.
        for gateway in self.gateways:
            gateway.start()
            await self.ready(gateway)
        await self.tail.start()
        for role in [*self.projectors, *self.workers]:
            role.start()
        for i, user in enumerate(self.online):
            self.clients[user] = WsClient(self, user, i % len(self.gateways))
            self.clients[user].start(self.http)
        for client in self.clients.values():
            await asyncio.wait_for(client.live.wait(), 60)
        # A trickle until every partition delivers (the workers' start-up is no scenario), then a check that
        # leaves the scenarios a settled baseline, then the steady load.
        self.load.rate = RATE / 5
        await self.load.start()
        await self.flowing(timeout=240, what="all workers joined and delivering")
        await self.check("start-up (trickle until every partition delivers)")
        self.latencies.clear()
        self.load.rate = RATE

    async def stop(self) -> None:
        await self.load.stop()
        await self.tail.stop()
        for client in self.clients.values():
            await client.stop()
        for role in self.roles:
            role.stop()
        if self.http is not None:
            await self.http.close()

    async def ready(self, gateway: Role, timeout: float = 90) -> None:
        """Until ``/readyz`` of a gateway answers 200."""
        assert self.http is not None
        http = self.http

        async def probe() -> bool:
            assert gateway.alive(), f"{gateway.name} exited with {gateway.proc and gateway.proc.returncode}"
            try:
                async with http.get(gateway.base + "/readyz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(probe, timeout=timeout, interval=0.2, what=f"{gateway.name} ready")

    async def flowing(self, *, timeout: float, what: str) -> float:
        """Run the load until a notification sent from now on has reached its online user on every partition;
        returns the seconds that took."""
        since = time.monotonic()
        self.load.resume()
        wanted = {partition_of(u) for u in self.online}

        async def probe() -> bool:
            self.assert_alive()
            got = {partition_of(s.user) for s in self.sent if s.at >= since and s.nid in self.received_at}
            return wanted <= got

        await eventually(probe, timeout=timeout, interval=0.05, what=what)
        return time.monotonic() - since

    def assert_alive(self) -> None:
        """No role died that the scenario did not kill."""
        dead = [r.name for r in self.roles if r.expected_alive and not r.alive()]
        assert not dead, f"{dead} died on their own; see {self.output_dir}/faults-*.log"

    # -- the scenario's figures --------------------------------------------------------------------

    def recovery(self, died_at: float) -> float:
        """Death -> deliveries flowing again: per partition, the first receipt of a notification sent after the
        death; the slowest partition counts."""
        first: dict[int, float] = {}
        for s in self.sent:
            got = self.received_at.get(s.nid)
            if s.at >= died_at and got is not None and s.user in self.clients:
                p = partition_of(s.user)
                first[p] = min(first.get(p, math.inf), got)
        wanted = {partition_of(u) for u in self.online}
        if not wanted <= set(first):
            return math.inf  # some partition never delivered again
        return max(first.values()) - died_at

    async def projected_again(self, died_at: float, timeout: float = 120) -> float:
        """Death of a projector -> rows appearing again on every partition: per partition, the first notification
        sent after the death, until REST serves it; the slowest partition counts."""
        assert self.http is not None
        http = self.http
        probes: dict[int, Sent] = {}
        seen_at: dict[int, float] = {}

        async def projected() -> bool:
            for s in self.sent:
                if s.at >= died_at and s.user in self.clients:
                    probes.setdefault(partition_of(s.user), s)
            gateway = next(g for g in self.gateways if g.alive())
            for p, s in probes.items():
                if p in seen_at:
                    continue
                async with http.get(
                    f"{gateway.base}/api/notifications/{s.nid}?user_id={s.user}",
                    headers={"Authorization": f"Bearer {self.admin}"},
                ) as resp:
                    if resp.status == 200:
                        seen_at[p] = time.monotonic()
            return len(seen_at) == PARTITIONS

        await eventually(projected, timeout=timeout, interval=0.1, what="rows projected again on every partition")
        return max(seen_at.values()) - died_at

    async def bulk(self) -> list[str]:
        """One bulk send to every user of the topology through a gateway."""
        assert self.http is not None
        gateway = next(g for g in self.gateways if g.alive())
        at = time.monotonic()
        async with self.http.post(
            gateway.base + "/api/notifications/bulk",
            json={"user_ids": self.all_users, "title": "bulk", "body": "to everyone", "priority": "medium"},
            headers={"Authorization": f"Bearer {self.writer}"},
        ) as resp:
            body = await resp.json()
            assert resp.status == 202, body
        assert body["requested"] == len(self.all_users), body
        ids = []
        for user in self.all_users:
            nid = derived_id(body["bulk_id"], user, "")
            self.sent.append(Sent(nid, user, "medium", ("websocket",), at))
            ids.append(nid)
        return ids

    # -- the checker -------------------------------------------------------------------------------

    async def check(self, scenario: str, *, died_at: float | None = None, resume: bool = True, **extra: Any) -> Report:
        """Pause the load, let everything settle, and check every notification accepted so far; then resume the
        load (unless ``resume`` is false)."""
        assert self.http is not None
        await self.load.pause()
        self.assert_alive()
        sent = list(self.sent)
        by_id = {s.nid: s for s in sent}
        assert len(by_id) == len(sent), "the load never reuses an id"
        new = sent[self.checked_upto :]
        report = Report(scenario, len(sent), len(new), extra=dict(extra))

        # 1. Every online client got each of its notifications (on some connection of its tab).
        expected: dict[str, set[str]] = defaultdict(set)
        for s in sent:
            expected[s.user].add(s.nid)

        async def delivered_online() -> bool:
            self.assert_alive()
            return all(expected[u] <= c.seen() for u, c in self.clients.items())

        try:
            await eventually(delivered_online, timeout=SETTLE_TIMEOUT, interval=0.2, what="every online notification")
        finally:
            # The figures first, so that a failed check still says how the scenario went.
            if died_at is not None:
                report.recover_seconds = self.recovery(died_at)
            latencies = [
                self.received_at[s.nid] - s.at for s in new if s.nid in self.received_at and s.user in self.clients
            ]
            self.latencies += latencies
            report.p50, report.p99 = percentile(latencies, 50), percentile(latencies, 99)
            report.max_latency = max(latencies, default=math.nan)
            print("\n" + report.line(), flush=True)
            missing = [by_id[n] for u, c in self.clients.items() for n in expected[u] - c.seen()]
            if missing:
                spread = Counter((s.priority, partition_of(s.user)) for s in missing)
                records = await log_records(
                    self.settings.kafka_bootstrap, TopicNames(self.settings.topic_prefix).events
                )
                lost = {s.nid for s in missing}
                in_log = Counter(r.get("type") for r in records if (r.get("data") or {}).get("notification_id") in lost)
                print(
                    f"[faults] {len(missing)} online notifications never arrived (by priority and partition:"
                    f" {dict(spread)}; their events in the log: {dict(in_log)}), e.g. {missing[:2]}",
                    flush=True,
                )
                print(await self.where_lost(lost), flush=True)
        for user, client in self.clients.items():
            for n, ids in enumerate(client.connections):
                twice = [nid for nid, k in Counter(ids).items() if k > 1]
                assert not twice, f"{user} got {twice[:3]} twice on connection {n}"
            assert client.seen() == expected[user], f"{user} got notifications of someone else"

        # 2. Email and push: each once, counted at the servers.
        emails = {s.nid for s in sent if "email" in s.channels}
        pushes = {s.nid for s in sent if "apns" in s.channels}

        def mail_copies() -> dict[str, list[tuple[float, str]]]:
            copies: dict[str, list[tuple[float, str]]] = defaultdict(list)
            for m in self.smtp.received:
                nid = str(m.message["X-Herald-Notification-Id"])
                copies[nid].append((m.received_at.timestamp(), str(m.message["Message-ID"])))
            return copies

        def push_copies() -> dict[str, list[tuple[float, str]]]:
            copies: dict[str, list[tuple[float, str]]] = defaultdict(list)
            for r in self.emulator.received:
                if r.status == 200 and r.payload is not None:
                    copies[str(r.payload.get("notification_id"))].append((r.received_at, r.apns_id))
            return copies

        async def channels_done() -> bool:
            return emails <= set(mail_copies()) and pushes <= set(push_copies())

        await eventually(channels_done, timeout=SETTLE_TIMEOUT, interval=0.2, what="every email and push")
        # At-least-once to providers: a worker killed between a provider's answer and the broker's acknowledgement
        # of its "sent" record (streams/sent_targets.py, add_durably) leaves the pair unrecorded, and the worker that
        # takes the partition over sends again with the same Message-ID / apns-id. Such a second copy is accepted
        # only when its first copy reached the server within IN_FLIGHT seconds before a worker's death and both
        # carry the same id (receivers drop it); any other second copy fails.
        deaths = sorted(d for w in self.workers for d in w.deaths)
        unexplained: list[str] = []
        for kind, copies in (("email", mail_copies()), ("push", push_copies())):
            for nid, got in copies.items():
                if len(got) < 2 or f"{kind} {nid}" in self.reported_twice:
                    continue
                self.reported_twice.add(f"{kind} {nid}")
                first = min(at for at, _ in got)
                gaps = [d - first for d in deaths if 0 <= d - first <= IN_FLIGHT]
                same_id = len({pid for _, pid in got}) == 1
                if gaps and same_id:
                    self.in_flight_resends.append(f"{kind} {nid}: first copy {min(gaps):.3f} s before a death")
                else:
                    unexplained.append(f"{kind} {nid} ({len(got)} copies, ids {sorted({p for _, p in got})})")
        report.extra["resent after a death (in flight, same id)"] = len(self.in_flight_resends)
        if self.in_flight_resends:
            print(f"[faults] resent after a worker's death, same id: {self.in_flight_resends}", flush=True)
        assert not unexplained, (
            f"{len(unexplained)} of {len(emails) + len(pushes)} emails and pushes sent twice, not in flight at a"
            f" worker's death: {unexplained[:3]}"
        )

        # 3. Every notification is projected: one row per id in REST (pending for offline ones until they connect).
        await eventually(
            lambda: self._rows_present(by_id), timeout=SETTLE_TIMEOUT, interval=0.5, what="every row in REST"
        )

        # 4. Offline users connect: their backlog is replayed, each notification exactly once.
        for user in self.offline:
            backlog = {nid for nid in expected[user] if nid not in self.offline_replayed}
            gateway = next(g for g in self.gateways if g.alive())
            token = mint_token(self.settings, user)
            url = gateway.base.replace("http", "ws", 1) + f"/ws/notifications?token={token}"
            async with self.http.ws_connect(url) as ws:
                replay = [item["id"] for item in await missed_notifications(ws, timeout=30)]
                await ws.close()
            counts = Counter(replay)
            assert not [n for n, k in counts.items() if k > 1], f"{user}'s backlog replayed a notification twice"
            assert set(counts) == backlog, (
                f"{user}'s replay: {len(backlog - set(counts))} missing, {len(set(counts) - backlog)} not expected"
            )
            self.offline_replayed |= backlog

        # 5. Every row reaches its terminal state (delivered) in REST.
        await eventually(
            lambda: self._rows_terminal(by_id), timeout=SETTLE_TIMEOUT, interval=0.5, what="every row delivered"
        )

        # 6. One decision per notification in the log: one decision event, accepted. A worker killed after appending
        #    it and before committing its input appends the same event again (same derived id: at-least-once append,
        #    applied once by the projector); two different decisions would be a fault.
        names = TopicNames(self.settings.topic_prefix)
        records = decoded(await read_to_end(self.settings.kafka_bootstrap, [names.events]))
        decisions: dict[str, set[tuple[str, str]]] = defaultdict(set)
        appended: Counter[str] = Counter()
        for r in records:
            if r.get("type") in DECISIONS:
                nid = str((r.get("data") or {}).get("notification_id"))
                decisions[nid].add((str(r["type"]), str(r["id"])))
                appended[nid] += 1
        wrong = [nid for nid in by_id if [t for t, _ in decisions[nid]] != ["notification.accepted"]]
        if wrong:
            print(await self.where_lost(set(wrong)), flush=True)
        assert not wrong, f"{len(wrong)} notifications without exactly one decision (accepted): {wrong[:3]}"
        report.extra["decision records re-appended so far"] = sum(appended[nid] - 1 for nid in by_id)
        report.extra["request offsets a live reader saw skipped so far"] = len(self.tail.jumps)

        # 7. Stats count each notification once (plus the rows of refused poison, which are no notification).
        async def stats_match() -> bool:
            refused = [row for u in self.poison_users for row in await self.rows(u)]
            assert all(row["status"] == "rejected" for row in refused), "a poison request became a notification"
            stats = await self._get("/api/notifications/stats?global=true", self.admin)
            return bool(stats["total"] == len(sent) + len(refused))

        await eventually(stats_match, timeout=60, interval=0.5, what=f"global stats total == {len(sent)} accepted")

        self.checked_upto = len(sent)
        self.reports.append(report)
        print(f"[faults] {scenario}: every check passed; {report.extra}", flush=True)
        if resume:
            self.load.resume()
        return report

    async def where_lost(self, nids: set[str]) -> str:
        """Where lost requests sit in the request topics, and whether the live tail saw its partition jump over
        them (the broker handing out N+1 before N)."""
        names = TopicNames(self.settings.topic_prefix)
        found = await locate(self.settings.kafka_bootstrap, names.requests, nids)
        lines = [f"[faults] {len(nids)} lost: {len(found)} found in the request topics"]
        group = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, group_id=self.settings.app_id)
        await group.start()  # not subscribed: it never joins, it only reads the workers' committed offsets
        try:
            for nid, (topic, partition, offset) in sorted(found.items(), key=lambda kv: kv[1]):
                jumped = self.tail.jumped_over(topic, partition, offset)
                committed = await group.committed(TopicPartition(topic, partition))
                lines.append(
                    f"  {nid} at {topic}[{partition}]@{offset}: live tail jumped over it: {jumped};"
                    f" the workers' committed offset: {committed}"
                )
        finally:
            await group.stop()
        lines.append(f"  all jumps the live tail saw ({self.tail.records} records read): {self.tail.jumps[:20]}")
        return "\n".join(lines)

    async def _get(self, path: str, token: str) -> Any:
        assert self.http is not None
        gateway = next(g for g in self.gateways if g.alive())
        async with self.http.get(gateway.base + path, headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def rows(self, user: str) -> list[dict[str, Any]]:
        """Every row of ``user`` in REST (all pages)."""
        out: list[dict[str, Any]] = []
        path: str | None = f"/api/notifications?user_id={user}&limit=200"
        while path:
            page = await self._get(path, self.admin)
            out += page["results"]
            nxt = page.get("next")
            path = nxt[nxt.index("/api/") :] if nxt else None
        return out

    async def _all_rows(self, users: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        users = list(users)
        pages = await asyncio.gather(*(self.rows(u) for u in users))
        return dict(zip(users, pages, strict=True))

    async def _rows_present(self, by_id: dict[str, Sent]) -> bool:
        rows = await self._all_rows(self.all_users)
        for user, items in rows.items():
            ids = Counter(item["id"] for item in items)
            assert not [n for n, k in ids.items() if k > 1], f"{user} has a notification listed twice"
        present = {item["id"] for items in rows.values() for item in items}
        return set(by_id) <= present

    async def _rows_terminal(self, by_id: dict[str, Sent]) -> bool:
        rows = await self._all_rows(self.all_users)
        status = {item["id"]: item["status"] for items in rows.values() for item in items}
        return all(status.get(nid) == "delivered" for nid in by_id)

    def overall(self) -> str:
        """The run's p99 over every online notification so far."""
        return (
            f"[faults] across the run: {len(self.latencies)} online notifications, latency p50 "
            f"{percentile(self.latencies, 50):.3f} s p99 {percentile(self.latencies, 99):.3f} s"
        )

    async def verify(self) -> subprocess.CompletedProcess[bytes]:
        """``herald verify``: the log replayed into a shadow schema, compared with the live read models."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "herald.cli",
            "verify",
            cwd=ROOT,
            env=role_env(self.settings),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 300)
        return subprocess.CompletedProcess(["herald", "verify"], proc.returncode or 0, out, None)
