"""Hostile WebSocket frames: each gets an error frame (or is ignored), the connection
stays open and keeps working, and the gateway serves everyone else.

Before the fix a frame of 5,000 nested brackets raised ``RecursionError`` in the frame
handler, which ended the connection with an internal error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings

from api.ws.gateway import MAX_CLIENT_FRAME
from engine.settings import Settings
from herald.stack import Stack, run_stack
from tests.support.api import isolated_settings, own_database, unique
from tests.support.clients import UserClient, missed_notifications, next_frame
from tests.support.hostile_json import hostile_document

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _frames(shape: dict[str, Any], count: int) -> list[bytes]:
    drawn: list[bytes] = []

    @settings(
        max_examples=count, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(doc=hostile_document(shape, inner=""))
    def collect(doc: bytes) -> None:
        drawn.append(doc)

    collect()
    return drawn


# Drawn at import, before any stack runs (Hypothesis and the Kafka clients' threads).
FRAMES = _frames({"type": "read", "id": "n-1"}, 40) + _frames({"type": "ping"}, 20)


@pytest.fixture(scope="module")
async def gw(kafka_bootstrap: str, redis_url: str) -> AsyncIterator[tuple[Stack, Settings]]:
    with own_database("herald_poison_ws") as url:
        gw_settings = isolated_settings(kafka_bootstrap, url, redis_url)
        async with run_stack(gw_settings, worker=False) as stack:
            yield stack, gw_settings


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _client(gw: tuple[Stack, Settings], http: aiohttp.ClientSession, name: str) -> UserClient:
    stack, gw_settings = gw
    return UserClient(http, f"http://127.0.0.1:{stack.http_port}", gw_settings, unique(name))


async def test_a_frame_nested_5000_deep_gets_an_error_and_the_socket_stays_open(
    gw: tuple[Stack, Settings], http: aiohttp.ClientSession
) -> None:
    ws = await _client(gw, http, "deep").websocket()
    try:
        await missed_notifications(ws)
        await ws.send_str("[" * 5000 + "]" * 5000)
        assert "nested deeper than 32 levels" in (await next_frame(ws, "error"))["error"]
        await ws.send_str('{"type":"read","id":"x\\ud800"}')
        assert "lone surrogate" in (await next_frame(ws, "error"))["error"]
        await ws.send_json({"type": "ping"})
        await next_frame(ws, "pong")
        assert not ws.closed
    finally:
        await ws.close()


async def test_hostile_frames_never_close_the_connection_or_break_the_gateway(
    gw: tuple[Stack, Settings], http: aiohttp.ClientSession
) -> None:
    stack, _ = gw
    ws = await _client(gw, http, "fuzz").websocket()
    try:
        await missed_notifications(ws)
        for frame in (f for f in FRAMES if len(f) <= MAX_CLIENT_FRAME):
            # Text frames carry text: invalid UTF-8 is sent as a binary frame, as a broken client would.
            try:
                text = frame.decode("utf-8")
            except UnicodeDecodeError:
                await ws.send_bytes(frame)
            else:
                await ws.send_str(text)
        await ws.send_json({"type": "ping"})
        await next_frame(ws, "pong", timeout=30)
        assert not ws.closed
    finally:
        await ws.close()
    # An oversized frame closes its own connection with 1009 (docs/websocket.md), nothing more.
    for frame in [f for f in FRAMES if len(f) > MAX_CLIENT_FRAME][:3]:
        big = await _client(gw, http, "big").websocket()
        await missed_notifications(big)
        await big.send_bytes(frame)
        closing = await big.receive(timeout=10)
        assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1009)
        await big.close()
    assert not stack.supervisor.failures
    # Another user connects and is served as usual.
    other = await _client(gw, http, "after").websocket()
    try:
        await missed_notifications(other)
        await other.send_json({"type": "ping"})
        await next_frame(other, "pong")
    finally:
        await other.close()
    async with http.get(f"http://127.0.0.1:{stack.http_port}/readyz") as resp:
        assert resp.status == 200
