"""kill -9 of the worker in the middle of a burst, then a restart: nothing lost, nothing doubled.

The worker is a real ``herald worker`` process (it is the one killed); the projector and
the API/gateway run in the test's loop with Redis presence, as separate roles would. One
WebSocket client per user stays connected throughout, resuming with ``since=`` like the demo
page if a gateway closes its socket (the test prints how often that happened). After the restart:

- every accepted notification is a row exactly once, and the global stats count each once
  (the projector applies a re-appended event once: same derived id);
- every client received each of its notifications at least once, and no connection
  received one twice (the gateway de-duplicates per connection what a re-run re-sends).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import psycopg
import pytest
from aiokafka import AIOKafkaProducer

from api.auth import mint_token
from engine.settings import Settings
from herald.stack import Stack, run_stack
from streams.admin import ensure_topics
from tests.support.kafka import request
from tests.support.processes import start_role, stop_role
from tests.support.settings import isolated_settings, reset_schema
from tests.support.waiting import eventually

BURST = int(os.environ.get("HERALD_TEST_CRASH_BURST", "20000"))
USERS = 200
KILL_AFTER = BURST // 4

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def crash_settings(kafka_bootstrap: str, database_url: str, redis_url: str) -> Settings:
    reset_schema(database_url)
    # Room for the burst: BURST / USERS requests per user within the hour.
    return isolated_settings(
        kafka_bootstrap, redis_url, database_url=database_url, rate_limit_high=2 * BURST // USERS + 10
    )


@pytest.fixture
async def read_side(crash_settings: Settings) -> AsyncIterator[Stack]:
    await ensure_topics(crash_settings)
    async with run_stack(crash_settings, worker=False, projector=True, api=True) as stack:
        yield stack


class Client:
    """One user's browser tab: like ``api/static/demo.js``, it resumes with ``since=`` the last id it
    saw whenever its connection goes away (a gateway may close it: 1013 after a feed loss, 4009 when
    too slow). Each connection's ids are kept in order, duplicates included; each close is recorded."""

    def __init__(self, user: str, url: str) -> None:
        self.user = user
        self.url = url
        self.connections: list[list[str]] = []
        self.closes: list[str] = []
        self.last_seen: str | None = None
        self.live = asyncio.Event()

    @property
    def got(self) -> list[str]:
        return [nid for ids in self.connections for nid in ids]

    async def run(self, http: aiohttp.ClientSession) -> None:
        while True:
            url = self.url + (f"&since={self.last_seen}" if self.last_seen else "")
            ids: list[str] = []
            try:
                async with http.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
                    self.connections.append(ids)
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        frame = orjson.loads(msg.data)
                        if frame.get("type") == "notification":
                            ids.append(frame["notification"]["id"])
                        elif frame.get("type") == "missed_notifications":
                            ids.extend(n["id"] for n in frame["notifications"])
                            if not frame.get("more"):
                                self.live.set()
                        if ids:
                            self.last_seen = ids[-1]
                    self.closes.append(f"closed {ws.close_code}")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.closes.append(f"failed {exc!r}"[:200])
            await asyncio.sleep(0.2)


def _tail(log: Path, lines: int = 15) -> list[str]:
    return log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []


async def diagnose(clients: list[Client], expected: dict[str, list[str]], settings: Settings, log: Path) -> str:
    """Where the notifications a client is missing are: their rows, and what the sockets saw."""
    missing = {c.user: sorted(set(expected[c.user]) - set(c.got)) for c in clients}
    missing = {user: ids for user, ids in missing.items() if ids}
    ids = [nid for per_user in missing.values() for nid in per_user][:2000]
    dsn = settings.database_url.replace("+psycopg", "")
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            "SELECT n.status, coalesce(c.state, '-'), count(*) FROM notifications n LEFT JOIN notification_channels c"
            " ON c.notification_id = n.id AND c.channel = 'websocket' WHERE n.id = ANY(%s) GROUP BY 1, 2",
            (ids,),
        )
        states = await cur.fetchall()
    closes = Counter(close for c in clients for close in c.closes)
    tail = _tail(log)
    return (
        f"{sum(map(len, missing.values()))} notifications missing on {len(missing)} clients"
        f" (e.g. {next(iter(missing.items()), None)!r:.300}); their rows (status, websocket state, count): {states};"
        f" connection ends: {dict(closes)}; worker log tail:\n" + "\n".join(tail)
    )


async def test_kill_9_of_the_worker_mid_burst_loses_nothing_and_doubles_nothing(
    read_side: Stack, crash_settings: Settings, output_dir: Path
) -> None:
    settings = crash_settings
    log = output_dir / "worker-crash.log"
    log.unlink(missing_ok=True)
    worker = start_role("worker", settings, log)
    users = [f"crash-{i}" for i in range(USERS)]
    base = f"ws://127.0.0.1:{read_side.http_port}/ws/notifications?token="
    # One connection per user: lift aiohttp's default pool limit of 100.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        clients = [Client(user, base + mint_token(settings, user)) for user in users]
        readers = [asyncio.create_task(c.run(http)) for c in clients]
        for client in clients:
            await asyncio.wait_for(client.live.wait(), 60)  # the (empty) replay: the client is live
        expected: dict[str, list[str]] = {user: [] for user in users}
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
        await producer.start()
        try:
            sends = []
            for i in range(BURST):
                user = users[i % USERS]
                body = request(user, f"crash {i}")
                expected[user].append(str(body["id"]))
                sends.append(
                    await producer.send(f"{settings.topic_prefix}requests.high", orjson.dumps(body), key=user.encode())
                )
            await asyncio.gather(*sends)

            def received() -> int:
                return sum(len(c.got) for c in clients)

            async def under_way() -> bool:
                return received() >= KILL_AFTER

            await eventually(under_way, timeout=300, interval=0.05, what="the burst under way")
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            at_kill = received()
            worker = start_role("worker", settings, log)

            async def all_delivered() -> bool:
                assert worker.poll() is None, f"the restarted worker exited with {worker.returncode}; see {log}"
                return all(set(expected[c.user]) <= set(c.got) for c in clients)

            try:
                await eventually(all_delivered, timeout=600, interval=0.2, what="every notification on its client")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {await diagnose(clients, expected, settings, log)}") from exc
            print(f"[crash] connection ends seen by the clients: {dict(Counter(x for c in clients for x in c.closes))}")
            assert at_kill < BURST, "the kill happened mid-burst"
            for client in clients:
                for ids in client.connections:
                    twice = [nid for nid, n in Counter(ids).items() if n > 1]
                    assert not twice, f"{client.user} got {len(twice)} notifications twice on one connection"
                assert set(client.got) == set(expected[client.user]), "nobody gets another user's notification"

            ids = [nid for per_user in expected.values() for nid in per_user]

            async def rows_once() -> bool:
                dsn = settings.database_url.replace("+psycopg", "")
                async with await psycopg.AsyncConnection.connect(dsn) as conn:
                    cur = await conn.execute(
                        "SELECT count(*), count(DISTINCT id) FROM notifications WHERE id = ANY(%s)", (ids,)
                    )
                    row = await cur.fetchone()
                assert row is not None
                assert row[0] == row[1], "a notification projected as two rows"
                return bool(row[0] == BURST)

            await eventually(rows_once, timeout=300, interval=0.5, what="every notification projected")
            admin = {"Authorization": f"Bearer {mint_token(settings, 'ops', scopes=('admin',))}"}
            api = f"http://127.0.0.1:{read_side.http_port}"
            async with http.get(f"{api}/api/notifications/stats?global=true", headers=admin) as resp:
                stats = await resp.json()
            assert stats["total"] == BURST, "each notification counted once in the stats"
        finally:
            await producer.stop()
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            stop_role(worker)
