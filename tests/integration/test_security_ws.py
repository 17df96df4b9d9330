"""WebSocket hardening (issue 10, items 7 and 8), driven by real WebSocket clients.

A client's frames are rate-limited per connection, reading a notification already read
appends nothing to ``herald.events``, and a socket is closed with 4001 when its token
expires. The API and the projector serve the module (no worker: notifications are
appended to the event log directly, as the worker would).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from api.auth import mint_token
from api.ws.connection import CLOSE_TOKEN_EXPIRED
from engine.settings import Settings
from engine.topics import TopicNames
from herald.stack import Stack, run_stack
from projections.queries import NotificationQueries
from tests.support.api import Api
from tests.support.clients import UserClient, missed_notifications, next_frame
from tests.support.event_log import Log, append
from tests.support.log_reader import log_records, of_type
from tests.support.settings import isolated_settings, reset_schema
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(120)

BURST = 20


@pytest.fixture(scope="module")
def ws_settings(kafka_bootstrap: str, database_url: str, redis_url: str) -> Settings:
    reset_schema(database_url)
    return isolated_settings(
        kafka_bootstrap,
        redis_url,
        database_url=database_url,
        ws_client_frame_burst=BURST,
        ws_client_frame_rate=0.2,
    )


@pytest.fixture(scope="module")
async def stack(ws_settings: Settings) -> AsyncIterator[Stack]:
    async with run_stack(ws_settings, worker=False) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _base(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.http_port}"


async def _seed(stack: Stack, settings: Settings, user: str, count: int) -> list[str]:
    """``count`` notifications for ``user``, projected."""
    log = Log()
    ids = [log.accepted(user, title=f"n{i}") for i in range(count)]
    await append(settings.kafka_bootstrap, TopicNames(settings.topic_prefix).events, log.envelopes)
    assert stack.engine is not None
    queries = NotificationQueries(stack.engine)

    async def projected() -> bool:
        return all([await queries.exists(i) for i in ids])

    await eventually(projected, what="the seeded notifications")
    return ids


async def _reads_in_log(settings: Settings, notification_id: str) -> list[dict[str, Any]]:
    records = await log_records(settings.kafka_bootstrap, TopicNames(settings.topic_prefix).events)
    return [r for r in of_type(records, "notification.read") if r["data"]["notification_id"] == notification_id]


async def test_reading_the_same_notification_again_appends_nothing(
    stack: Stack, ws_settings: Settings, http: aiohttp.ClientSession
) -> None:
    user = f"reader-{uuid.uuid4().hex[:6]}"
    first, by_rest = await _seed(stack, ws_settings, user, 2)
    client = UserClient(http, _base(stack), ws_settings, user)
    api = Api(http, _base(stack), client.token)
    rest_read = await api.patch(f"/api/notifications/{by_rest}/read")
    assert rest_read.status == 200 and rest_read.body["read_at"]

    ws = await client.websocket()
    await missed_notifications(ws)
    answers = []
    for _ in range(10):
        await ws.send_json({"type": "read", "id": first})
        answers.append(await next_frame(ws, "read"))
    await ws.send_json({"type": "read", "id": by_rest})
    again = await next_frame(ws, "read")
    await ws.close()  # a clean close answers once the gateway's records are on the broker

    assert {a["read_at"] for a in answers} == {answers[0]["read_at"]}  # one read, confirmed ten times
    assert again["read_at"] == rest_read.body["read_at"]  # the read recorded over REST, not a new one
    assert len(await _reads_in_log(ws_settings, first)) == 1
    assert [r["data"]["via"] for r in await _reads_in_log(ws_settings, by_rest)] == ["api"]


async def test_a_flood_of_frames_is_answered_with_rate_limit_errors_past_the_burst(
    stack: Stack, ws_settings: Settings, http: aiohttp.ClientSession
) -> None:
    user = f"flood-{uuid.uuid4().hex[:6]}"
    client = UserClient(http, _base(stack), ws_settings, user)
    ws = await client.websocket()
    await missed_notifications(ws)
    for _ in range(3 * BURST):
        await ws.send_json({"type": "ping"})
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        while len(frames) < 3 * BURST:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
            frames.append(json.loads(msg.data))
    pongs = [f for f in frames if f["type"] == "pong"]
    limited = [f for f in frames if f["type"] == "error" and f["error"].startswith("rate limited")]
    assert BURST <= len(pongs) <= BURST + 1  # the bucket refills at 0.2 frames per second
    assert len(pongs) + len(limited) == 3 * BURST
    assert all(f["retry_after"] > 0 for f in limited)
    assert not ws.closed  # refused frames are dropped; the connection stays up
    await ws.close()


async def test_a_socket_is_closed_with_4001_when_its_token_expires(
    stack: Stack, ws_settings: Settings, http: aiohttp.ClientSession
) -> None:
    user = f"brief-{uuid.uuid4().hex[:6]}"
    token = mint_token(ws_settings, user, ttl=3)
    expires_at = time.time() + 3
    url = _base(stack).replace("http", "ws", 1) + f"/ws/notifications?token={token}"
    ws = await http.ws_connect(url)
    await missed_notifications(ws)
    async with asyncio.timeout(15):
        msg = await ws.receive()
        while msg.type == aiohttp.WSMsgType.TEXT:
            msg = await ws.receive()
    closed_at = time.time()
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, CLOSE_TOKEN_EXPIRED), (msg.type, msg.data, msg.extra)
    assert "token expired" in msg.extra
    assert expires_at - 1.5 <= closed_at <= expires_at + 5  # at exp (whole seconds), not at connect
    # A fresh token opens a new connection.
    fresh = await UserClient(http, _base(stack), ws_settings, user).websocket()
    await missed_notifications(fresh)
    await fresh.close()
