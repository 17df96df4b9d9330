"""Two real ``herald api`` processes behind one worker: fan-out, limits, replay and presence across nodes.

The gateways are OS processes started as an operator would (``python -m herald.cli api``
with ``HERALD_*`` variables); the worker and projector run in the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api.auth import mint_token
from api.ws.connection import CLOSE_TOO_MANY_CONNECTIONS
from engine.settings import Settings
from engine.topics import TopicNames
from herald.broker import free_port
from herald.stack import Stack, run_stack
from tests.support.clients import UserClient, missed_notifications, next_frame
from tests.support.kafka import publish, request
from tests.support.log_reader import log_records, of_type
from tests.support.processes import clean_env
from tests.support.settings import isolated_settings, reset_schema
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).parents[2]
PRESENCE_TTL = 2


@dataclass
class Gateway:
    """One ``herald api`` process."""

    node: str
    base: str
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def cluster_settings(kafka_bootstrap: str, database_url: str, redis_url: str) -> Settings:
    reset_schema(database_url)
    return isolated_settings(kafka_bootstrap, redis_url, database_url=database_url, presence_ttl_seconds=PRESENCE_TTL)


@pytest.fixture(scope="module")
async def worker(cluster_settings: Settings) -> AsyncIterator[Stack]:
    async with run_stack(cluster_settings, worker=True, projector=True, api=False) as running:
        yield running


def _start_gateway(settings: Settings, node: str, output_dir: Path) -> Gateway:
    port = free_port()
    env = clean_env()
    env.update(
        HERALD_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        HERALD_TOPIC_PREFIX=settings.topic_prefix,
        HERALD_DATABASE_URL=settings.database_url,
        HERALD_REDIS_URL=settings.redis_url,
        HERALD_HTTP_HOST="127.0.0.1",
        HERALD_HTTP_PORT=str(port),
        HERALD_NODE_ID=node,
        HERALD_PRESENCE_TTL_SECONDS=str(PRESENCE_TTL),
        HERALD_PRODUCER_MAX_BATCH_SIZE="1",
        HERALD_KAFKA_FETCH_MAX_WAIT_MS="20",
        HERALD_LOG_LEVEL="INFO",
        HERALD_JWT_SECRET=settings.jwt_secret,
    )
    with (output_dir / f"gateway-{node}.log").open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "herald.cli", "api"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    return Gateway(node=node, base=f"http://127.0.0.1:{port}", proc=proc)


async def _ready(http: aiohttp.ClientSession, gateway: Gateway) -> None:
    async def probe() -> bool:
        assert gateway.proc.poll() is None, f"gateway {gateway.node} exited with {gateway.proc.returncode}"
        try:
            async with http.get(gateway.base + "/readyz") as resp:
                return resp.status == 200
        except aiohttp.ClientConnectionError:
            return False

    await eventually(probe, timeout=60, interval=0.2, what=f"gateway {gateway.node} ready")


@pytest.fixture(scope="module")
async def gateways(worker: Stack, cluster_settings: Settings, output_dir: Path) -> AsyncIterator[dict[str, Gateway]]:
    started: dict[str, Gateway] = {}
    try:
        async with aiohttp.ClientSession() as http:
            # Both at once: the schema migration they run at start is under an advisory lock
            # (projections/migrations.py), and the worker's projector has migrated already.
            for name in ("A", "B"):
                started[name] = _start_gateway(cluster_settings, f"{cluster_settings.topic_prefix}{name}", output_dir)
            await asyncio.gather(*(_ready(http, gateway) for gateway in started.values()))
        yield started
    finally:
        for gateway in started.values():
            if gateway.proc.poll() is None:
                gateway.proc.send_signal(signal.SIGTERM)
        for gateway in started.values():
            try:
                gateway.proc.wait(15)
            except subprocess.TimeoutExpired:
                gateway.proc.kill()
                gateway.proc.wait(5)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _user(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


async def _send(settings: Settings, user: str, title: str) -> str:
    req = request(user, title, priority="high")
    await publish(
        settings.kafka_bootstrap,
        TopicNames(settings.topic_prefix).request("high"),
        [(user.encode(), json.dumps(req).encode())],
    )
    return str(req["id"])


async def _events(settings: Settings, event_type: str, user: str, count: int) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]] | None:
        records = of_type(
            await log_records(settings.kafka_bootstrap, TopicNames(settings.topic_prefix).events), event_type, user=user
        )
        return records if len(records) >= count else None

    return await eventually(probe, timeout=30, what=f"{count} {event_type} for {user}")


async def _presence_nodes(http: aiohttp.ClientSession, gateway: Gateway, settings: Settings, user: str) -> list[str]:
    token = mint_token(settings, "ops", scopes=("presence:read",))
    async with http.get(f"{gateway.base}/api/presence/{user}", headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200
        return [n["node_id"] for n in (await resp.json())["nodes"]]


async def test_a_user_on_either_gateway_gets_notifications_and_the_gateway_records_delivery(
    gateways: dict[str, Gateway], http: aiohttp.ClientSession, cluster_settings: Settings
) -> None:
    a, b = gateways["A"], gateways["B"]
    alice = UserClient(http, a.base, cluster_settings, _user("alice"))
    bob = UserClient(http, b.base, cluster_settings, _user("bob"))
    on_a, on_b = await alice.websocket(), await bob.websocket()
    assert await missed_notifications(on_a) == []
    assert await missed_notifications(on_b) == []

    for_alice = await _send(cluster_settings, alice.user, "via A")
    for_bob = await _send(cluster_settings, bob.user, "via B")
    assert (await next_frame(on_a, "notification"))["notification"]["id"] == for_alice
    assert (await next_frame(on_b, "notification"))["notification"]["id"] == for_bob

    [alice_ok] = await _events(cluster_settings, "delivery.succeeded", alice.user, 1)
    [bob_ok] = await _events(cluster_settings, "delivery.succeeded", bob.user, 1)
    assert alice_ok["subject"] == for_alice
    assert alice_ok["data"]["target"].startswith(f"{a.node}/")
    assert bob_ok["subject"] == for_bob
    assert bob_ok["data"]["target"].startswith(f"{b.node}/")
    assert alice_ok["source"] == bob_ok["source"] == "herald/gateway"
    await on_a.close()
    await on_b.close()


async def test_the_connection_limit_holds_across_gateways(
    gateways: dict[str, Gateway], http: aiohttp.ClientSession, cluster_settings: Settings
) -> None:
    user = _user("erin")
    via_a = UserClient(http, gateways["A"].base, cluster_settings, user)
    via_b = UserClient(http, gateways["B"].base, cluster_settings, user)
    sockets = [await via_a.websocket() for _ in range(3)] + [await via_b.websocket() for _ in range(2)]
    for ws in sockets:
        await missed_notifications(ws)
    for client in (via_a, via_b):
        sixth = await client.websocket()
        msg = await asyncio.wait_for(sixth.receive(), 10)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, CLOSE_TOO_MANY_CONNECTIONS)
    for ws in sockets:
        await ws.close()


async def test_missed_notifications_replay_exactly_once_across_a_gateway_switch(
    gateways: dict[str, Gateway], http: aiohttp.ClientSession, cluster_settings: Settings
) -> None:
    a, b = gateways["A"], gateways["B"]
    user = _user("carol")
    via_a = UserClient(http, a.base, cluster_settings, user)
    via_b = UserClient(http, b.base, cluster_settings, user)
    ws = await via_a.websocket()
    assert await missed_notifications(ws) == []
    await ws.close()

    missed = [await _send(cluster_settings, user, f"while away {i}") for i in range(3)]
    await _events(cluster_settings, "delivery.deferred", user, 3)

    ws = await via_b.websocket()
    replay = await missed_notifications(ws)
    assert [n["id"] for n in replay] == missed
    assert [n["title"] for n in replay] == ["while away 0", "while away 1", "while away 2"]
    live = await _send(cluster_settings, user, "live one")
    assert (await next_frame(ws, "notification"))["notification"]["id"] == live
    await ws.close()

    ws = await via_a.websocket()
    assert await missed_notifications(ws) == []
    await ws.send_json({"type": "ping"})
    msg = await asyncio.wait_for(ws.receive(), 10)
    assert json.loads(msg.data) == {"type": "pong"}, "something was sent again before the pong"
    await ws.close()
    succeeded = await _events(cluster_settings, "delivery.succeeded", user, 4)
    assert sorted(e["subject"] for e in succeeded) == sorted([*missed, live])


async def test_presence_of_a_killed_gateway_expires_and_delivery_continues_on_the_other(
    gateways: dict[str, Gateway], http: aiohttp.ClientSession, cluster_settings: Settings
) -> None:
    a, b = gateways["A"], gateways["B"]
    user = _user("dave")
    ws_a = await UserClient(http, a.base, cluster_settings, user).websocket()
    ws_b = await UserClient(http, b.base, cluster_settings, user).websocket()
    await missed_notifications(ws_a)
    await missed_notifications(ws_b)
    assert sorted(await _presence_nodes(http, b, cluster_settings, user)) == sorted([a.node, b.node])

    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)

    async def only_b() -> list[str] | None:
        nodes = await _presence_nodes(http, b, cluster_settings, user)
        return nodes if nodes == [b.node] else None

    await eventually(only_b, timeout=PRESENCE_TTL * 3, what="the killed gateway's presence to expire")
    nid = await _send(cluster_settings, user, "after the crash")
    assert (await next_frame(ws_b, "notification"))["notification"]["id"] == nid
    await ws_b.close()
    await ws_a.close()
