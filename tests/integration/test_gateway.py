"""The WebSocket gateway on one node, driven by real WebSocket clients.

One stack (worker, projector, API with Redis presence) serves the whole module; every
test uses its own user ids. Multi-node behaviour is in test_gateway_cluster.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from api.auth import mint_token
from api.ws.connection import CLOSE_TOO_MANY_CONNECTIONS, CLOSE_TOO_SLOW
from engine.settings import Settings
from engine.topics import TopicNames
from herald.stack import Stack, run_stack
from tests.support.clients import UserClient, missed_notifications, next_frame
from tests.support.kafka import publish, request
from tests.support.log_reader import log_records, of_type
from tests.support.settings import isolated_settings, reset_schema
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def gw_settings(kafka_bootstrap: str, database_url: str, redis_url: str) -> Settings:
    """Like the ``settings`` fixture, for a stack shared by the module; short heartbeat, small queues."""
    reset_schema(database_url)
    return isolated_settings(
        kafka_bootstrap,
        redis_url,
        database_url=database_url,
        ws_heartbeat_seconds=1.0,
        ws_send_queue_size=16,
        presence_ttl_seconds=3,
    )


@pytest.fixture(scope="module")
async def gw(gw_settings: Settings) -> AsyncIterator[Stack]:
    async with run_stack(gw_settings) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _user(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


async def _send(settings: Settings, user: str, title: str, **data: Any) -> str:
    req = request(user, title, **data)
    topic = TopicNames(settings.topic_prefix).request(data.get("priority", "high"))
    await publish(settings.kafka_bootstrap, topic, [(user.encode(), json.dumps(req).encode())])
    return str(req["id"])


async def _deferred(settings: Settings, user: str, count: int) -> None:
    async def probe() -> list[dict[str, Any]] | None:
        records = of_type(
            await log_records(settings.kafka_bootstrap, TopicNames(settings.topic_prefix).events),
            "delivery.deferred",
            user=user,
        )
        return records if len(records) >= count else None

    await eventually(probe, timeout=30, what=f"{count} deferred deliveries for {user}")


async def _presence(http: aiohttp.ClientSession, base: str, settings: Settings, user: str) -> dict[str, Any]:
    token = mint_token(settings, "ops", scopes=("presence:read",))
    async with http.get(f"{base}/api/presence/{user}", headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


async def test_sixth_connection_is_refused_with_4008_and_the_five_keep_working(
    gw: Stack, http: aiohttp.ClientSession, gw_settings: Settings
) -> None:
    base = f"http://127.0.0.1:{gw.http_port}"
    user = UserClient(http, base, gw_settings, _user("limit"))
    sockets = [await user.websocket() for _ in range(5)]
    for ws in sockets:
        await missed_notifications(ws)

    sixth = await user.websocket()
    msg = await asyncio.wait_for(sixth.receive(), 10)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == CLOSE_TOO_MANY_CONNECTIONS
    assert "at most 5 connections" in msg.extra

    for ws in sockets:
        await ws.send_json({"type": "ping"})
        assert (await next_frame(ws, "pong"))["type"] == "pong"
    assert (await _presence(http, base, gw_settings, user.user))["connections"] == 5

    await sockets.pop().close()
    replacement = await user.websocket()
    assert (await missed_notifications(replacement)) == []
    for ws in [*sockets, replacement]:
        await ws.close()


async def test_presence_endpoint_is_for_service_tokens_and_the_user_itself(
    gw: Stack, http: aiohttp.ClientSession, gw_settings: Settings
) -> None:
    base = f"http://127.0.0.1:{gw.http_port}"
    carol = UserClient(http, base, gw_settings, _user("carol"))
    ws = await carol.websocket()
    await missed_notifications(ws)

    body = await _presence(http, base, gw_settings, carol.user)
    assert body["online"] is True
    assert [(n["node_id"], n["connections"]) for n in body["nodes"]] == [(gw_settings.node_id, 1)]
    status, own = await carol.get(f"/api/presence/{carol.user}")
    assert status == 200
    assert own["connections"] == 1

    mallory = UserClient(http, base, gw_settings, _user("mallory"))
    status, problem = await mallory.get(f"/api/presence/{carol.user}")
    assert status == 404
    assert problem["status"] == 404
    writer = UserClient(http, base, gw_settings, "producer", scopes=("notifications:write",))
    status, problem = await writer.get(f"/api/presence/{carol.user}")
    assert status == 403
    assert "presence:read" in problem["detail"]

    await ws.close()

    async def offline() -> dict[str, Any] | None:
        now = await _presence(http, base, gw_settings, carol.user)
        return now if not now["online"] else None

    assert (await eventually(offline, what="carol offline"))["nodes"] == []


async def test_since_cursor_recovers_precisely_even_what_was_delivered(
    gw: Stack, http: aiohttp.ClientSession, gw_settings: Settings
) -> None:
    base = f"http://127.0.0.1:{gw.http_port}"
    dan = UserClient(http, base, gw_settings, _user("dan"))
    ws = await dan.websocket()
    assert await missed_notifications(ws) == []
    ids = [await _send(gw_settings, dan.user, f"n{i}") for i in range(3)]
    got = [(await next_frame(ws, "notification"))["notification"]["id"] for _ in ids]
    assert got == ids
    await ws.close()

    # The client saw only the first (say its tab crashed): it asks for everything after it.
    again = await dan.websocket(f"&since={ids[0]}")
    assert [n["id"] for n in await missed_notifications(again)] == ids[1:]
    await again.close()

    # Without a cursor nothing is owed: all three were recorded as delivered.
    plain = await dan.websocket()
    assert await missed_notifications(plain) == []
    # An id that is not the user's is refused and the undelivered set is replayed instead.
    other = await dan.websocket("&since=someone-elses-id")
    assert "unknown 'since' id" in (await next_frame(other, "error"))["error"]
    assert await missed_notifications(other) == []
    await plain.close()
    await other.close()


async def test_expired_notifications_are_not_replayed(
    gw: Stack, http: aiohttp.ClientSession, gw_settings: Settings
) -> None:
    base = f"http://127.0.0.1:{gw.http_port}"
    erin = UserClient(http, base, gw_settings, _user("erin"))
    expires = datetime.now(UTC) + timedelta(seconds=4)
    short = await _send(gw_settings, erin.user, "flash sale", expires_at=expires.isoformat())
    lasting = await _send(gw_settings, erin.user, "your invoice")
    await _deferred(gw_settings, erin.user, 2)

    async def expired() -> bool:
        return datetime.now(UTC) > expires + timedelta(milliseconds=200)

    await eventually(expired, timeout=10, what="the first notification to expire")
    ws = await erin.websocket()
    replayed = [n["id"] for n in await missed_notifications(ws)]
    assert replayed == [lasting]
    assert short not in replayed
    await ws.close()


async def test_read_over_the_socket_appends_notification_read(
    gw: Stack, http: aiohttp.ClientSession, gw_settings: Settings
) -> None:
    base = f"http://127.0.0.1:{gw.http_port}"
    fay = UserClient(http, base, gw_settings, _user("fay"))
    ws = await fay.websocket()
    await missed_notifications(ws)
    nid = await _send(gw_settings, fay.user, "read me")
    assert (await next_frame(ws, "notification"))["notification"]["id"] == nid

    await ws.send_json({"type": "ack", "id": nid})
    await ws.send_json({"type": "read", "id": nid})
    confirmed = await next_frame(ws, "read")
    assert confirmed["id"] == nid
    assert confirmed["read_at"]
    await ws.send_json({"type": "read", "id": "not-yours"})
    assert (await next_frame(ws, "error"))["error"] == "no such notification"
    await ws.send_str("{nope")
    assert (await next_frame(ws, "error"))["error"] == "malformed JSON"
    await ws.send_json({"type": "subscribe"})
    assert "unsupported frame type" in (await next_frame(ws, "error"))["error"]

    async def read_event() -> list[dict[str, Any]] | None:
        records = await log_records(gw_settings.kafka_bootstrap, TopicNames(gw_settings.topic_prefix).events)
        return of_type(records, "notification.read", user=fay.user) or None

    [event] = await eventually(read_event, what="notification.read in the event log")
    assert event["subject"] == nid
    assert event["data"]["via"] == "websocket"
    await ws.close()


async def test_dead_connection_is_closed_after_the_heartbeat_timeout(
    gw: Stack, http: aiohttp.ClientSession, gw_settings: Settings
) -> None:
    base = f"http://127.0.0.1:{gw.http_port}"
    gus = UserClient(http, base, gw_settings, _user("gus"))
    url = base.replace("http", "ws", 1) + f"/ws/notifications?token={gus.token}"
    # A client that never answers pings (a vanished laptop): autoping off, pings ignored.
    ws = await http.ws_connect(url, autoping=False)
    await missed_notifications(ws)
    assert (await _presence(http, base, gw_settings, gus.user))["connections"] == 1

    kinds = []
    while True:
        msg = await asyncio.wait_for(ws.receive(), 10)
        kinds.append(msg.type)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            break
    assert aiohttp.WSMsgType.PING in kinds

    async def gone() -> bool:
        return (await _presence(http, base, gw_settings, gus.user))["connections"] == 0

    await eventually(gone, timeout=5, what="the dead connection to leave presence")


async def test_slow_client_is_disconnected_with_4009_and_memory_stays_bounded(
    gw: Stack, http: aiohttp.ClientSession, gw_settings: Settings
) -> None:
    base = f"http://127.0.0.1:{gw.http_port}"
    hal = UserClient(http, base, gw_settings, _user("hal"))
    ws = await hal.websocket()
    await missed_notifications(ws)
    assert gw.hub is not None
    # The client stops reading; the server keeps producing 64 KB frames. Socket buffers
    # fill, then the 16-frame queue, then the gateway gives up on this client.
    blob = "x" * 65536
    pushed = 0
    while gw.hub.connection_count(hal.user) and pushed < 5000:
        if not await gw.hub.deliver_local(hal.user, {"type": "notice", "text": blob}):
            break
        pushed += 1
        await asyncio.sleep(0)
    assert pushed < 5000, "the gateway never gave up on a client that does not read"

    codes = []
    while True:
        msg = await asyncio.wait_for(ws.receive(), 20)
        if msg.type != aiohttp.WSMsgType.TEXT:
            codes.append((msg.type, msg.data))
            break
    assert codes == [(aiohttp.WSMsgType.CLOSE, CLOSE_TOO_SLOW)]
