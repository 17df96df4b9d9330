"""One REST request followed through the JSON logs of a real stack by its correlation id.

The stack (worker, projector, API; Tansu, Postgres, Redis, the APNs emulator) logs through
Herald's own JSON handler (``herald.logs.json_handler``) into a buffer, as a role logs to
stderr. The request's ``X-Request-ID`` must come back in the response, become the
CloudEvents ``correlationid`` of every event it causes, and appear on every log line
about the notification: the API's, ingest's, the live dispatch's and the APNs sink's.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from engine.settings import Settings
from herald.apns_emulator import ApnsEmulator
from herald.logs import json_handler
from herald.stack import Stack, run_stack
from schemas.codec import format_time
from streams.apns_sink import ApnsSink
from streams.device_registry import DeviceRegistry
from tests.support.api import Api, own_database
from tests.support.apns import apns_settings
from tests.support.clients import UserClient, missed_notifications, next_frame
from tests.support.kafka import publish_json, request
from tests.support.log_reader import TopicTail
from tests.support.settings import isolated_settings
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

HERALD_LOGGERS = ("api", "streams", "projections", "herald")


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with own_database("herald_corr") as url:
        yield url


@pytest.fixture(scope="module")
def settings(
    kafka_bootstrap: str, redis_url: str, database: str, emulator: ApnsEmulator, signing_key: tuple[str, str]
) -> Settings:
    return isolated_settings(
        kafka_bootstrap, redis_url, database_url=database, **apns_settings(emulator, signing_key[0])
    )


@pytest.fixture(scope="module")
def registry() -> DeviceRegistry:
    return DeviceRegistry()


@pytest.fixture(scope="module")
def json_log() -> Iterator[io.StringIO]:
    """Herald's JSON log lines of everything in this process, at DEBUG, in a buffer."""
    buffer = io.StringIO()
    handler = json_handler(buffer)
    root = logging.getLogger()
    root.addHandler(handler)
    levels = {name: logging.getLogger(name).level for name in HERALD_LOGGERS}
    for name in HERALD_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@pytest.fixture(scope="module")
async def stack(settings: Settings, registry: DeviceRegistry, json_log: io.StringIO) -> AsyncIterator[Stack]:
    async with run_stack(settings, sinks=[ApnsSink(settings, registry)]) as running:
        yield running


@pytest.fixture(scope="module")
async def events(stack: Stack, settings: Settings) -> AsyncIterator[TopicTail]:
    assert stack.topics is not None
    tail = TopicTail(settings.kafka_bootstrap, stack.topics.names.events)
    await tail.start()
    yield tail
    await tail.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    """Every JSON line logged so far (each must parse: the handler writes one object per line)."""
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


async def test_a_request_id_follows_the_notification_through_every_log_line(
    stack: Stack,
    settings: Settings,
    registry: DeviceRegistry,
    emulator: ApnsEmulator,
    events: TopicTail,
    json_log: io.StringIO,
    http: aiohttp.ClientSession,
) -> None:
    base = f"http://127.0.0.1:{stack.http_port}"
    user = f"rita-{uuid.uuid4().hex[:6]}"
    api = Api.for_user(http, base, settings, user)
    token = secrets.token_hex(32)
    assert (await api.post("/api/devices", json={"device_token": token})).status == 201

    async def known() -> bool:
        return token in registry.active_tokens(user)

    await eventually(known, what="the device in the worker's registry")
    ws = await UserClient(http, base, settings, user).websocket()
    await missed_notifications(ws)

    rid = f"checkout-{uuid.uuid4()}"
    reply = await api.post(
        "/api/notifications",
        json={"title": "Order shipped", "channels": ["websocket", "apns"]},
        headers={"X-Request-ID": rid},
    )
    assert reply.status == 202, reply.body
    assert reply.headers["X-Request-ID"] == rid
    nid = reply.body["id"]
    assert (await next_frame(ws, "notification"))["notification"]["id"] == nid
    async with asyncio.timeout(30):
        await emulator.wait_for(1, token=token)
    await ws.close()

    # The events it caused carry the request id as their correlation id.
    [accepted] = await events.wait_events(1, type="notification.accepted", subject=nid)
    succeeded = await events.wait_events(2, type="delivery.succeeded", subject=nid)
    assert {e["correlationid"] for e in [accepted, *succeeded]} == {rid}

    # Every log line about the notification carries it, whichever component wrote it.
    expected = {"api.http_metrics", "streams.ingest", "streams.websocket_sink", "streams.delivery_attempt"}

    async def followed() -> set[str] | None:
        loggers = {line["logger"] for line in lines(json_log) if line.get("correlation_id") == rid}
        return loggers if expected <= loggers else None

    loggers = await eventually(followed, what=f"log lines of {sorted(expected)} with the request id")
    about = [line for line in lines(json_log) if line.get("notification_id") == nid]
    assert about, "no log line names the notification"
    assert [line for line in about if line.get("correlation_id") != rid] == []
    [http_line] = [
        line for line in lines(json_log) if line["logger"] == "api.http_metrics" and line.get("request_id") == rid
    ]
    assert (http_line["route"], http_line["status"], http_line["level"]) == ("/api/notifications", 202, "INFO")
    assert loggers >= expected


async def test_delayed_work_keeps_the_request_id_when_the_scheduler_fires_it(
    stack: Stack, settings: Settings, events: TopicTail, json_log: io.StringIO, http: aiohttp.ClientSession
) -> None:
    base = f"http://127.0.0.1:{stack.http_port}"
    user = f"tess-{uuid.uuid4().hex[:6]}"
    rid = f"later-{uuid.uuid4().hex}"
    soon = format_time(datetime.now(UTC) + timedelta(seconds=2))
    reply = await Api.for_user(http, base, settings, user).post(
        "/api/notifications",
        json={"title": "In two seconds", "channels": ["websocket"], "deliver_after": soon},
        headers={"X-Request-ID": rid},
    )
    assert reply.status == 202, reply.body
    nid = reply.body["id"]
    [deferred] = await events.wait_events(1, type="delivery.deferred", subject=nid, within=30)  # user offline
    assert deferred["correlationid"] == rid

    stages = {"streams.ingest", "streams.scheduler", "streams.websocket_sink"}

    async def fired() -> list[dict[str, Any]] | None:
        about = [line for line in lines(json_log) if line.get("notification_id") == nid]
        return about if {line["logger"] for line in about} >= stages else None

    about = await eventually(fired, what=f"lines of {sorted(stages)} about the delayed notification")
    assert {line.get("correlation_id") for line in about} == {rid}


async def test_a_kafka_request_is_followed_by_its_own_id(
    stack: Stack, settings: Settings, events: TopicTail, json_log: io.StringIO
) -> None:
    assert stack.topics is not None
    user = f"sam-{uuid.uuid4().hex[:6]}"
    body = request(user, "From a producer", channels=["websocket"])  # no correlationid: its id is used
    await publish_json(settings.kafka_bootstrap, stack.topics.names.request("medium"), user, body)
    await events.wait_events(1, type="delivery.deferred", subject=body["id"])

    async def logged() -> list[dict[str, Any]] | None:
        about = [line for line in lines(json_log) if line.get("notification_id") == body["id"]]
        return about if {line["logger"] for line in about} >= {"streams.ingest", "streams.websocket_sink"} else None

    about = await eventually(logged, what="ingest and dispatch lines about the request")
    assert {line.get("correlation_id") for line in about} == {body["id"]}


@pytest.mark.parametrize(
    "given",
    [None, "", "has spaces in it", "x" * 129, "tab\tinside", "ünïcode"],
    ids=["missing", "empty", "spaces", "too-long", "control", "non-ascii"],
)
async def test_an_insane_or_missing_request_id_is_replaced_by_a_fresh_one(
    stack: Stack, http: aiohttp.ClientSession, given: str | None
) -> None:
    base = f"http://127.0.0.1:{stack.http_port}"
    headers = {} if given is None else {"X-Request-ID": given}
    seen = set()
    for _ in range(2):
        async with http.get(base + "/api/notifications", headers=headers) as resp:  # no token: 401
            assert resp.status == 401
            minted = resp.headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", minted), minted
        seen.add(minted)
    assert len(seen) == 2, "each request gets its own id"


async def test_a_sane_request_id_is_echoed_on_errors_too(stack: Stack, http: aiohttp.ClientSession) -> None:
    base = f"http://127.0.0.1:{stack.http_port}"
    for path, status in (("/api/notifications", 401), ("/no/such/page", 404), ("/healthz", 200)):
        async with http.get(base + path, headers={"X-Request-ID": "trace:0af7651916cd43dd"}) as resp:
            assert resp.status == status
            assert resp.headers["X-Request-ID"] == "trace:0af7651916cd43dd"
