"""The APNs channel through the whole pipeline: Kafka in, the APNs emulator (h2 over TLS, ES256) out.

Devices are registered by appending ``device.registered`` to the event log, as the API
does; the sink finds them in the device registry (Faust tables built from the log).
One worker serves the module; every test has its own users and tokens.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from api.auth import mint_token
from engine.settings import Settings
from herald.apns_emulator import ApnsEmulator
from herald.stack import Stack, run_stack
from schemas.codec import format_time
from schemas.envelope import Envelope
from schemas.events import DeviceRegistered
from schemas.ids import uuid7
from streams.apns_sink import ApnsSink
from streams.device_registry import DeviceRegistry
from streams.metrics import DUPLICATE_SENDS_SUPPRESSED
from tests.integration.stream_core_support import core_settings
from tests.support.apns import TOPIC, apns_settings
from tests.support.event_log import append
from tests.support.kafka import publish, publish_json, request
from tests.support.log_reader import TopicTail
from tests.support.settings import reset_schema
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def settings(
    kafka_bootstrap: str, database_url: str, redis_url: str, emulator: ApnsEmulator, signing_key: tuple[str, str]
) -> Settings:
    reset_schema(database_url)
    return core_settings(
        kafka_bootstrap,
        redis_url,
        database_url=database_url,
        **apns_settings(emulator, signing_key[0]),
        retry_base_delay_seconds=0.3,
        retry_max_attempts=4,
        retry_jitter=0.1,
        scheduler_tick_seconds=0.2,
    )


@pytest.fixture(scope="module")
def registry() -> DeviceRegistry:
    return DeviceRegistry()


@pytest.fixture(scope="module")
async def stack(settings: Settings, registry: DeviceRegistry) -> AsyncIterator[Stack]:
    async with run_stack(settings, sinks=[ApnsSink(settings, registry)]) as s:
        yield s


@pytest.fixture(scope="module")
async def log(stack: Stack, settings: Settings) -> AsyncIterator[TopicTail]:
    assert stack.topics is not None
    tail = TopicTail(settings.kafka_bootstrap, stack.topics.names.events)
    await tail.start()
    yield tail
    await tail.stop()


def _user(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


def _token() -> str:
    return secrets.token_hex(32)


async def _register(stack: Stack, settings: Settings, registry: DeviceRegistry, user: str, *tokens: str) -> None:
    assert stack.topics is not None
    envs = [
        Envelope(
            id=uuid7(),
            source="tests",
            time=datetime.now(UTC),
            data=DeviceRegistered(user, t),
            subject=None,
            userid=user,
        )
        for t in tokens
    ]
    await append(settings.kafka_bootstrap, stack.topics.names.events, envs)

    async def known() -> bool:
        return set(tokens) <= set(registry.active_tokens(user))

    await eventually(known, what=f"{tokens} active in the registry")


async def _send(stack: Stack, settings: Settings, user: str, priority: str = "high", **data: object) -> str:
    assert stack.topics is not None
    body = request(user, data.pop("title", "Ping"), channels=["apns"], **data)  # type: ignore[arg-type]
    await publish_json(settings.kafka_bootstrap, stack.topics.names.request(priority), user, body)
    return str(body["id"])


async def test_high_goes_with_priority_10_and_low_with_5_with_the_request_s_apns_fields(
    stack: Stack, settings: Settings, registry: DeviceRegistry, emulator: ApnsEmulator, log: TopicTail
) -> None:
    user, token = _user("ivy"), _token()
    await _register(stack, settings, registry, user, token)
    expires = datetime.now(UTC) + timedelta(hours=1)
    high = await _send(
        stack,
        settings,
        user,
        "high",
        title="Gate changed",
        body="Now boarding at B12",
        badge=3,
        sound="default",
        category="travel",
        collapse_key="flight-42",
        expires_at=format_time(expires),
        data={"flight": "HB42"},
    )
    async with asyncio.timeout(30):
        [first] = await emulator.wait_for(1, token=token)
    low = await _send(stack, settings, user, "low", title="Weekly digest")
    async with asyncio.timeout(30):
        _, second = await emulator.wait_for(2, token=token)
    assert first.status == 200
    assert second.status == 200
    assert first.headers["apns-priority"] == "10"
    assert second.headers["apns-priority"] == "5"
    assert first.headers["apns-push-type"] == "alert"
    assert first.headers["apns-topic"] == TOPIC
    assert first.headers["apns-collapse-id"] == "flight-42"
    assert abs(int(first.headers["apns-expiration"]) - expires.timestamp()) <= 2
    assert "apns-expiration" not in second.headers
    assert first.payload is not None
    assert first.payload["aps"] == {
        "alert": {"title": "Gate changed", "body": "Now boarding at B12"},
        "badge": 3,
        "sound": "default",
        "category": "travel",
        "thread-id": "flight-42",
    }
    assert first.payload["flight"] == "HB42"
    [ok_high] = await log.wait_events(1, type="delivery.succeeded", subject=high)
    [ok_low] = await log.wait_events(1, type="delivery.succeeded", subject=low)
    assert ok_high["data"]["provider_id"] == first.apns_id
    assert ok_high["data"]["target"] == token
    assert ok_low["data"]["provider_id"] == second.apns_id


async def test_a_410_token_is_invalidated_skipped_next_time_and_revived_by_a_newer_registration(
    stack: Stack, settings: Settings, registry: DeviceRegistry, emulator: ApnsEmulator, log: TopicTail
) -> None:
    user, dead, alive = _user("jon"), _token(), _token()
    await _register(stack, settings, registry, user, dead, alive)
    emulator.unregister(dead)
    first = await _send(stack, settings, user, title="one")
    [invalidated] = await log.wait_events(1, type="device.invalidated", userid=user)
    assert invalidated["data"]["device_token"] == dead
    assert invalidated["data"]["reason"] == "Unregistered"
    assert invalidated["data"]["invalid_since"]
    [failed] = await log.wait_events(1, type="delivery.failed", subject=first)
    assert failed["data"]["target"] == dead
    assert failed["data"]["retriable"] is False
    await log.wait_events(1, type="delivery.succeeded", subject=first)
    assert registry.active_tokens(user) == [alive]

    # Over REST, the notification shows where each device stands.
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {mint_token(settings, user)}"}

        async def per_device() -> dict[str, str] | None:
            url = f"http://127.0.0.1:{stack.http_port}/api/notifications/{first}"
            async with http.get(url, headers=headers) as resp:
                body = await resp.json() if resp.status == 200 else {}
            found = {t["target"]: t["status"] for t in body.get("targets", [])}
            return found if len(found) == 2 else None

        assert await eventually(per_device, what="per-device status") == {dead: "invalid_token", alive: "sent"}

    second = await _send(stack, settings, user, title="two")
    [ok] = await log.wait_events(1, type="delivery.succeeded", subject=second)
    assert ok["data"]["target"] == alive
    assert [r.status for r in emulator.received if r.token == dead] == [410]  # never tried again
    assert not log.events(type="delivery.failed", subject=second)

    emulator.reset()  # the app was reinstalled: APNs knows the token again
    await _register(stack, settings, registry, user, dead)
    third = await _send(stack, settings, user, title="three")
    oks = await log.wait_events(2, type="delivery.succeeded", subject=third)
    assert {o["data"]["target"] for o in oks} == {dead, alive}
    assert [r.status for r in emulator.received if r.token == dead] == [200]


async def test_an_oversize_payload_is_refused_before_sending_with_a_clear_reason(
    stack: Stack, settings: Settings, registry: DeviceRegistry, emulator: ApnsEmulator, log: TopicTail
) -> None:
    user, token = _user("kit"), _token()
    await _register(stack, settings, registry, user, token)
    nid = await _send(stack, settings, user, title="Long", body="x" * 4500)
    [abandoned] = await log.wait_events(1, type="delivery.abandoned", subject=nid)
    assert "over APNs' 4096-byte limit" in abandoned["data"]["error"]
    assert abandoned["data"]["attempts"] == 1
    [failed] = log.events(type="delivery.failed", subject=nid)
    assert failed["data"]["retriable"] is False
    assert not [r for r in emulator.received if r.token == token]


async def test_429_and_503_are_retried_until_delivered(
    stack: Stack, settings: Settings, registry: DeviceRegistry, emulator: ApnsEmulator, log: TopicTail
) -> None:
    user, token = _user("lea"), _token()
    await _register(stack, settings, registry, user, token)
    emulator.fail_next(429, count=1, token=token)
    emulator.fail_next(503, count=1, token=token)
    nid = await _send(stack, settings, user, title="Eventually")
    [ok] = await log.wait_events(1, type="delivery.succeeded", subject=nid, within=30)
    assert ok["data"]["attempt"] == 3
    failed = log.events(type="delivery.failed", subject=nid)
    assert [f["data"]["retriable"] for f in failed] == [True, True]
    assert [r.status for r in emulator.received if r.token == token] == [429, 503, 200]
    # One push, one apns-id: the retries are recognisably the same notification.
    assert len({r.apns_id for r in emulator.received if r.token == token}) == 1


async def test_a_burst_to_many_devices_is_sent_concurrently_when_apns_answers_slowly_each_token_once(
    stack: Stack, settings: Settings, registry: DeviceRegistry, emulator: ApnsEmulator, log: TopicTail
) -> None:
    """60 notifications to 60 devices with APNs taking 0.25 s per answer: one after another the
    pushes would arrive over 15 s; with pushes in flight together they all arrive within a few."""
    count, delay = 60, 0.25
    assert settings.apns_max_in_flight >= count
    users = [_user(f"rush{i}") for i in range(count)]
    tokens = {user: _token() for user in users}
    assert stack.topics is not None
    now = datetime.now(UTC)
    await append(
        settings.kafka_bootstrap,
        stack.topics.names.events,
        [
            Envelope(id=uuid7(), source="tests", time=now, data=DeviceRegistered(u, t), subject=None, userid=u)
            for u, t in tokens.items()
        ],
    )

    async def known() -> bool:
        return all(t in registry.active_tokens(u) for u, t in tokens.items())

    await eventually(known, what=f"{count} devices active in the registry")
    bodies = {user: request(user, "Flash sale", channels=["apns"]) for user in users}
    wanted = set(tokens.values())
    records: list[tuple[bytes | None, bytes | None]] = [(u.encode(), json.dumps(b).encode()) for u, b in bodies.items()]
    emulator.latency = delay
    try:
        await publish(
            settings.kafka_bootstrap,
            stack.topics.names.request("low"),
            records,
        )

        async def all_answered() -> bool:
            return all(log.events(type="delivery.succeeded", subject=b["id"]) for b in bodies.values())

        await eventually(all_answered, timeout=60, what=f"{count} pushes answered")
    finally:
        emulator.latency = 0.0
    received = [r for r in emulator.received if r.token in wanted]
    assert sorted(r.token for r in received) == sorted(wanted), "each token exactly one push"
    assert {r.status for r in received} == {200}
    arrivals = [r.received_at for r in received]
    spread = max(arrivals) - min(arrivals)
    # One after another: at least (count - 1) x delay = 14.75 s between the first and the last.
    assert spread < (count - 1) * delay / 3, f"pushes arrived over {spread:.2f} s: not sent concurrently"
    for body in bodies.values():
        assert len(log.events(type="delivery.succeeded", subject=body["id"])) == 1


async def test_the_same_work_record_twice_at_once_pushes_once(
    stack: Stack, settings: Settings, registry: DeviceRegistry, emulator: ApnsEmulator, log: TopicTail
) -> None:
    """Two copies of a work record taken by two actors together (a redelivered batch): while the
    first push is in flight the second waits for it, then finds it sent."""
    user, token = _user("twin"), _token()
    await _register(stack, settings, registry, user, token)
    assert stack.topics is not None
    # A websocket-only request: its acceptance is on the log but no push work was handed over.
    body = request(user, "Twice", channels=["websocket"])
    await publish_json(settings.kafka_bootstrap, stack.topics.names.request("high"), user, body)
    nid = str(body["id"])
    [accepted] = await log.wait_events(1, type="notification.accepted", subject=nid)
    before = DUPLICATE_SENDS_SUPPRESSED.labels("apns")._value.get()
    record: tuple[bytes | None, bytes | None] = (user.encode(), json.dumps(accepted).encode())
    emulator.latency = 0.5
    try:
        await publish(settings.kafka_bootstrap, stack.topics.names.delivery("apns"), [record, record])

        async def suppressed() -> bool:
            return bool(DUPLICATE_SENDS_SUPPRESSED.labels("apns")._value.get() > before)

        await eventually(suppressed, timeout=30, what="the second copy to be suppressed")
    finally:
        emulator.latency = 0.0
    assert [r.status for r in emulator.received if r.token == token] == [200]
    await log.wait_events(1, type="delivery.succeeded", subject=nid)
    assert len(log.events(type="delivery.succeeded", subject=nid)) == 1
