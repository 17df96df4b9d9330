"""A small process topology and the dependency switches of the dependency-fault tests.

One ``herald worker``, one ``herald projector`` and one ``herald api``, each a real OS
process started with the CLI (``tests/support/processes.py``), sharing a database the test
creates and can close to connections, optionally a private ``redis-server`` the test can
restart, and the session's Tansu (or one the test starts late on a reserved port). What
the tests read back: each role's CPU time (``/proc``) over an outage, its JSON log
lines, ``/readyz`` of the API, every accepted notification's decision in the log and its
row in Postgres, and what WebSocket clients received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg
from aiokafka import AIOKafkaProducer

from engine.settings import Settings
from herald.broker import free_port, wait_for_port
from tests.support.clients import UserClient
from tests.support.kafka import request
from tests.support.log_reader import log_records, of_type
from tests.support.processes import start_role, stop_role

PG_ADMIN_URL = os.environ.get("HERALD_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
TICKS = os.sysconf("SC_CLK_TCK")


# --- Postgres: a database of the test's own that it can close -------------------------------------


@contextlib.contextmanager
def own_database(*, open_: bool = True) -> Iterator[str]:
    """A fresh database (SQLAlchemy psycopg URL), dropped afterwards; closed to connections unless ``open_``."""
    name = f"herald_dep_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        if not open_:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_name(url: str) -> str:
    """The database part of a connection URL."""
    return url.rsplit("/", 1)[1]


def terminate_sessions(url: str) -> int:
    """``pg_terminate_backend`` every session on the database of ``url``; how many there were."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        cur = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [database_name(url)],
        )
        row = cur.fetchone()
        return int(row[0]) if row else 0


def close_database(url: str) -> None:
    """Refuse new connections to the database and cut the ones it has: unreachable, as after a crash."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database_name(url)}" ALLOW_CONNECTIONS false')
    terminate_sessions(url)


def open_database(url: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database_name(url)}" ALLOW_CONNECTIONS true')


def rows(url: str, ids: list[str]) -> tuple[int, int]:
    """(rows, distinct ids) in ``notifications`` among ``ids``."""
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT id) FROM notifications WHERE id = ANY(%s)", (ids,)
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


# --- Redis: a private server the test can restart -------------------------------------------------


class RedisServer:
    """``redis-server`` on a free port of its own (no persistence: a restart forgets everything)."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._log = log
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self._log.open("ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        await wait_for_port("127.0.0.1", self.port)

    async def stop(self) -> None:
        """Kill it, as a crash would: no goodbye to the clients."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()
        self._proc = None


# --- Roles as processes ---------------------------------------------------------------------------


@dataclass
class Role:
    """One ``herald ROLE`` process and its log."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def lines(self) -> list[dict[str, Any]]:
        """The JSON log lines so far (tracebacks and other text left out)."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def messages(self, starting: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if str(line.get("message", "")).startswith(starting)]

    def assert_alive(self) -> None:
        assert self.proc.poll() is None, f"herald {self.name} exited with {self.proc.returncode}; see {self.log}"


@dataclass
class Topology:
    """Worker, projector and API as processes; ``base`` is the API's URL."""

    settings: Settings
    roles: dict[str, Role] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}"

    def cpu(self) -> dict[str, float]:
        return {name: role.cpu_seconds() for name, role in self.roles.items()}

    def assert_alive(self) -> None:
        for role in self.roles.values():
            role.assert_alive()


@contextlib.asynccontextmanager
async def topology(
    settings: Settings, output_dir: Path, tag: str, roles: tuple[str, ...] = ("worker", "projector", "api")
) -> AsyncIterator[Topology]:
    """Start ``roles`` as processes (logs in ``output_dir/deps-<tag>-<role>.log``); stop them on exit."""
    top = Topology(settings)
    try:
        for name in roles:
            log = output_dir / f"deps-{tag}-{name}.log"
            log.unlink(missing_ok=True)
            top.roles[name] = Role(name, start_role(name, settings, log), log)
        yield top
    finally:
        for role in top.roles.values():
            stop_role(role.proc)


def settings_for(base: Settings, **overrides: Any) -> Settings:
    """``base`` with a fixed API port (processes cannot report an ephemeral one) and INFO logs."""
    values = {"http_port": free_port(), "log_level": "INFO", "rate_limit_high": 100_000, **overrides}
    return base.replace(**values)


async def readyz(http: aiohttp.ClientSession, base: str) -> tuple[int | None, Any]:
    """``/readyz``: (status, body), or (None, None) while nothing listens."""
    try:
        async with http.get(base + "/readyz", timeout=aiohttp.ClientTimeout(total=10)) as resp:
            return resp.status, await resp.json(content_type=None)
    except (aiohttp.ClientConnectionError, TimeoutError):
        return None, None


# --- Load and what users got ----------------------------------------------------------------------


class Load:
    """Steady requests on ``requests.high`` over ``users`` (round robin); ``ids[user]`` in send order."""

    def __init__(self, settings: Settings, users: list[str], **data: Any) -> None:
        self.settings = settings
        self.users = users
        self.data = data
        self.data_for: dict[str, dict[str, Any]] = {}
        """Fields added to one user's requests (e.g. its ``email``)."""
        self.ids: dict[str, list[str]] = {u: [] for u in users}
        self.sent = 0

    @property
    def all_ids(self) -> list[str]:
        return [nid for ids in self.ids.values() for nid in ids]

    async def run(self, count: int, rate: float) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, linger_ms=2)
        await producer.start()
        try:
            started = time.monotonic()
            for i in range(count):
                user = self.users[self.sent % len(self.users)]
                body = request(user, f"load {self.sent}", **{**self.data, **self.data_for.get(user, {})})
                self.ids[user].append(str(body["id"]))
                await producer.send_and_wait(
                    f"{self.settings.topic_prefix}requests.high", orjson.dumps(body), key=user.encode()
                )
                self.sent += 1
                ahead = started + (i + 1) / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        finally:
            await producer.stop()


async def decisions(settings: Settings) -> Counter[str]:
    """How many ``notification.accepted`` the log holds per notification id."""
    records = await log_records(settings.kafka_bootstrap, f"{settings.topic_prefix}events", settle_ms=500)
    return Counter(str(r["data"]["notification_id"]) for r in of_type(records, "notification.accepted"))


class LiveClient:
    """One user's WebSocket that resumes with ``since=`` like the demo page; every id it got, duplicates included."""

    def __init__(self, http: aiohttp.ClientSession, base: str, settings: Settings, user: str) -> None:
        self.user = user
        self.client = UserClient(http, base, settings, user)
        self.got: list[str] = []
        self.connections = 0
        self.replays = 0
        """``missed_notifications`` frames that ended a replay (``more: false``): one per live connection."""
        self.per_connection_duplicates = 0
        self.resumed: list[str] = []
        """Ids first received in a replay of a reconnection (what the client had missed)."""
        self._task: asyncio.Task[None] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"client-{self.user}")

    async def _run(self) -> None:
        delay = 0.2
        while True:
            since = f"&since={self.got[-1]}" if self.got else ""
            try:
                self._ws = await self.client.websocket(since)
            except (aiohttp.ClientError, OSError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self.connections += 1
            delay = 0.2
            seen: set[str] = set()
            try:
                async for msg in self._ws:
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        break
                    frame = orjson.loads(msg.data)
                    ids = []
                    replayed = frame.get("type") == "missed_notifications"
                    if frame.get("type") == "notification":
                        ids = [frame["notification"]["id"]]
                    elif replayed:
                        ids = [n["id"] for n in frame["notifications"]]
                        self.replays += 0 if frame.get("more") else 1
                    for nid in ids:
                        if nid in seen:
                            self.per_connection_duplicates += 1
                        seen.add(nid)
                        if nid not in self.got:
                            self.got.append(nid)
                            if replayed and self.connections > 1:
                                self.resumed.append(nid)
            except (aiohttp.ClientError, OSError):
                pass
            finally:
                await self._ws.close()
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._ws is not None:
            await self._ws.close()
