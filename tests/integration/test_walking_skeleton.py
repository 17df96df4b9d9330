"""The product's whole path on real parts: Kafka -> agents -> WebSocket client and REST API."""

from __future__ import annotations

import json
import time

import aiohttp
import pytest

from engine.settings import Settings
from herald.stack import run_stack
from tests.support.clients import UserClient, next_frame
from tests.support.kafka import publish, request
from tests.support.log_reader import read_topic
from tests.support.waiting import eventually


@pytest.fixture
async def stack(settings: Settings):  # type: ignore[no-untyped-def]
    async with run_stack(settings) as running:
        yield running


@pytest.fixture
async def http() -> aiohttp.ClientSession:  # type: ignore[misc]
    async with aiohttp.ClientSession() as session:
        yield session


async def test_request_on_kafka_reaches_websocket_and_rest_for_its_user_only(stack, http, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    base = f"http://127.0.0.1:{stack.http_port}"
    alice = UserClient(http, base, settings, "alice")
    bob = UserClient(http, base, settings, "bob")
    ws = await alice.websocket()
    # Presence is registered once the gateway has accepted the socket; a ping round trip proves it.
    await ws.send_json({"type": "ping"})
    assert (await next_frame(ws, "pong"))["type"] == "pong"

    req = request("alice", "Deploy finished", body="v1.2.3 is live", priority="high")
    sent_at = time.monotonic()
    await publish(settings.kafka_bootstrap, stack.topics.names.request("high"), [(b"alice", json.dumps(req).encode())])

    frame = await next_frame(ws, "notification")
    latency = time.monotonic() - sent_at
    live = frame["notification"]
    assert live["id"] == req["id"]
    assert (live["title"], live["body"], live["priority"], live["user_id"]) == (
        "Deploy finished",
        "v1.2.3 is live",
        "high",
        "alice",
    )
    assert latency < 5, f"live delivery took {latency:.2f}s"

    async def listed() -> list[dict[str, object]] | None:
        status, body = await alice.get("/api/notifications")
        assert status == 200
        done = [n for n in body["results"] if n["id"] == req["id"] and n["status"] == "delivered"]
        return done or None

    [item] = await eventually(listed, what="alice's notification to be listed as delivered")
    assert item["title"] == "Deploy finished"
    assert item["read_at"] is None
    status, detail = await alice.get(f"/api/notifications/{req['id']}")
    assert status == 200 and detail["id"] == req["id"]

    status, problem = await bob.get(f"/api/notifications/{req['id']}")
    assert status == 404
    assert problem["status"] == 404
    status, body = await bob.get("/api/notifications")
    assert status == 200 and body["results"] == []
    await ws.close()


async def test_offline_user_gets_deferred_event_and_rest_history(stack, http, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    base = f"http://127.0.0.1:{stack.http_port}"
    carol = UserClient(http, base, settings, "carol")
    req = request("carol", "While you were away")
    await publish(settings.kafka_bootstrap, stack.topics.names.request("low"), [(b"carol", json.dumps(req).encode())])

    records = await read_topic(settings.kafka_bootstrap, stack.topics.names.events, until=2)
    types = [json.loads(r.value)["type"] for r in records]
    assert types == ["notification.accepted", "delivery.deferred"]

    async def pending() -> list[dict[str, object]] | None:
        _, body = await carol.get("/api/notifications")
        return body["results"] or None

    [item] = await eventually(pending, what="carol's notification in the read model")
    assert item["status"] == "pending" and item["priority"] == "low"


async def test_malformed_message_is_dead_lettered_and_does_not_block_the_next(stack, http, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    base = f"http://127.0.0.1:{stack.http_port}"
    dave = UserClient(http, base, settings, "dave")
    ws = await dave.websocket()
    await ws.send_json({"type": "ping"})
    await next_frame(ws, "pong")
    good = request("dave", "after the garbage")
    topic = stack.topics.names.request("medium")
    await publish(settings.kafka_bootstrap, topic, [(b"dave", b"{not json"), (b"dave", json.dumps(good).encode())])

    frame = await next_frame(ws, "notification")
    assert frame["notification"]["id"] == good["id"]
    [dead] = await read_topic(settings.kafka_bootstrap, stack.topics.names.deadletter, until=1)
    headers = dict(dead.headers)
    assert dead.value == b"{not json"
    assert b"malformed JSON" in headers["herald-error"]
    assert headers["herald-source-topic"] == topic.encode()
    await ws.close()


async def test_health_readiness_and_metrics(stack, http) -> None:  # type: ignore[no-untyped-def]
    base = f"http://127.0.0.1:{stack.http_port}"
    async with http.get(base + "/healthz") as resp:
        assert resp.status == 200
    async with http.get(base + "/readyz") as resp:
        body = await resp.json()
        assert resp.status == 200, body
        assert body["checks"] == ["broker", "database", "redis", "tasks", "worker"]
    async with http.get(base + "/metrics") as resp:
        text = await resp.text()
        assert "active_websocket_connections" in text
        assert "notifications_created_total" in text


async def test_bad_tokens_are_refused_with_problem_json(stack, http, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    base = f"http://127.0.0.1:{stack.http_port}"
    forged = UserClient(http, base, settings.replace(jwt_secret="x" * 40), "alice")
    for headers in ({}, {"Authorization": "Bearer not-a-jwt"}, forged.headers, {"Authorization": "Basic abc"}):
        async with http.get(base + "/api/notifications", headers=headers) as resp:
            assert resp.status == 401
            assert resp.content_type == "application/problem+json"
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(base.replace("http", "ws") + f"/ws/notifications?token={forged.token}")
    assert info.value.status == 401
