"""kill -9 of the worker in the middle of a burst, then a restart: nothing lost, nothing doubled.

The worker is a real ``herald worker`` process (it is the one killed); the projector and
the API/gateway run in the test's loop with Redis presence, as separate roles would. One
WebSocket client per user stays connected throughout. After the restart:

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
    """One user's socket: every notification id it got, in order, duplicates included."""

    def __init__(self, user: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.user = user
        self.ws = ws
        self.got: list[str] = []

    async def read(self) -> None:
        async for msg in self.ws:
            frame = orjson.loads(msg.data)
            if frame.get("type") == "notification":
                self.got.append(frame["notification"]["id"])
            elif frame.get("type") == "missed_notifications":
                self.got.extend(n["id"] for n in frame["notifications"])


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
        clients = []
        for user in users:
            ws = await http.ws_connect(base + mint_token(settings, user))
            await ws.receive(timeout=30)  # the (empty) replay: the client is live
            clients.append(Client(user, ws))
        readers = [asyncio.create_task(c.read()) for c in clients]
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

            await eventually(all_delivered, timeout=600, interval=0.2, what="every notification on its client")
            assert at_kill < BURST, "the kill happened mid-burst"
            for client in clients:
                twice = [nid for nid, n in Counter(client.got).items() if n > 1]
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
            for client in clients:
                await client.ws.close()
            stop_role(worker)
