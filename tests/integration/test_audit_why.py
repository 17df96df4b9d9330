"""``herald why`` and ``GET /api/notifications/{id}/explain`` on real traffic: a whole stack
(worker, projector, API), the APNs emulator and an email sink; the answers come from the log."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest

from api.auth import SCOPE_ADMIN
from engine.settings import Settings
from herald.apns_emulator import ApnsEmulator
from herald.broker import free_port
from herald.stack import Stack, run_stack
from schemas.envelope import Envelope
from schemas.events import DeviceRegistered
from schemas.ids import uuid7
from streams.apns_sink import ApnsSink
from streams.device_registry import DeviceRegistry
from tests.integration.audit_support import end_offsets, herald
from tests.integration.stream_core_support import ScriptedEmailSink, core_settings
from tests.support.api import Api
from tests.support.apns import apns_settings
from tests.support.clients import missed_notifications
from tests.support.event_log import append
from tests.support.kafka import publish, publish_json, request
from tests.support.log_reader import TopicTail
from tests.support.settings import reset_schema
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


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
        email_fallback_seconds=120.0,  # long: the test reads first
        rate_limit_low=1,
        scheduler_tick_seconds=0.2,
    )


@pytest.fixture(scope="module")
def registry() -> DeviceRegistry:
    return DeviceRegistry()


@pytest.fixture(scope="module")
async def stack(settings: Settings, registry: DeviceRegistry) -> AsyncIterator[Stack]:
    async with run_stack(settings, sinks=[ApnsSink(settings, registry), ScriptedEmailSink()]) as s:
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


def _base(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.http_port}"


async def _why(settings: Settings, nid: str) -> str:
    result = await herald(settings, "why", nid)
    assert result.status == 0, result.stderr
    return result.stdout


async def test_offline_replayed_fallback_cancelled_and_who_may_ask(
    stack: Stack, settings: Settings, log: TopicTail
) -> None:
    user = _user("ann")
    async with aiohttp.ClientSession() as http:
        ann = Api.for_user(http, _base(stack), settings, user)
        sent = await ann.post("/api/notifications", json={"title": "hi", "channels": ["websocket", "email"]})
        nid = sent.body["id"]
        await log.wait_events(2, type="delivery.deferred", subject=nid)  # websocket offline, email fallback
        ws = await http.ws_connect(_base(stack).replace("http", "ws") + f"/ws/notifications?token={ann.token}")
        assert [n["id"] for n in await missed_notifications(ws)] == [nid]
        await ws.close()
        await log.wait_events(1, type="delivery.succeeded", subject=nid)

        async def read() -> bool:
            return (await ann.patch(f"/api/notifications/{nid}/read")).status == 200

        await eventually(read, what="the notification marked read")
        await log.wait_events(1, type="delivery.cancelled", subject=nid)

        out = await _why(settings, nid)
        assert f"notification {nid} for user {user}" in out
        assert "decision: accepted" in out
        assert "routed to: websocket, email" in out
        assert "websocket: deferred, the user was offline" in out
        assert "replayed on reconnect at" in out
        assert "email fallback cancelled by a read at" in out

        explained = await ann.get(f"/api/notifications/{nid}/explain")
        assert explained.status == 200
        assert explained.body["decision"] == "accepted"
        assert explained.body["channels"]["email"]["outcome"] == "cancelled"
        assert explained.body["steps"][0]["type"] == "notification.accepted"
        assert all(s["where"].startswith(f"{settings.topic_prefix}events/") for s in explained.body["steps"])
        other = await Api.for_user(http, _base(stack), settings, _user("eve")).get(f"/api/notifications/{nid}/explain")
        assert other.status == 404 and other.content_type == "application/problem+json"
        admin = Api.for_user(http, _base(stack), settings, "ops", SCOPE_ADMIN)
        assert (await admin.get(f"/api/notifications/{nid}/explain")).status == 200
        assert (await admin.get("/api/notifications/no-such-id/explain")).status == 404


async def test_apns_410_invalidates_the_token(
    stack: Stack, settings: Settings, registry: DeviceRegistry, emulator: ApnsEmulator, log: TopicTail
) -> None:
    assert stack.topics is not None
    user, dead = _user("jon"), secrets.token_hex(32)
    env = Envelope(uuid7(), "tests", datetime.now(UTC), DeviceRegistered(user, dead), subject=None, userid=user)
    await append(settings.kafka_bootstrap, stack.topics.names.events, [env])

    async def known() -> bool:
        return dead in registry.active_tokens(user)

    await eventually(known, what="the device registered")
    emulator.unregister(dead)
    body = request(user, "ping", channels=["apns"])
    await publish_json(settings.kafka_bootstrap, stack.topics.names.request("high"), user, body)
    await log.wait_events(1, type="delivery.abandoned", subject=body["id"])
    out = await _why(settings, str(body["id"]))
    assert f"device token {dead[:8]}...{dead[-4:]} invalidated (Unregistered)" in out
    assert "failed (APNs 410 Unregistered: device token invalidated), permanent" in out
    assert "apns: abandoned" in out


async def test_refused_and_unparsable_requests_are_explained(stack: Stack, settings: Settings, log: TopicTail) -> None:
    assert stack.topics is not None
    names = stack.topics.names
    user = _user("bob")
    first = request(user, "one", priority="low", idempotency_key="k-1")
    again = request(user, "again", priority="low", idempotency_key="k-1")
    over = request(user, "two", priority="low")
    for body in (first, again, over):
        await publish_json(settings.kafka_bootstrap, names.request("low"), user, body)
    invalid = request(user, "no title")
    del invalid["data"]["title"]
    await publish_json(settings.kafka_bootstrap, names.request("high"), user, invalid)
    broken_id = str(uuid.uuid4())
    broken = f'{{"specversion":"1.0","type":"notification.requested","id":"{broken_id}","data":{{"user_id":'
    raw: list[tuple[bytes | None, bytes | None]] = [(user.encode(), broken.encode())]
    await publish(settings.kafka_bootstrap, names.request("high"), raw)
    await log.wait_events(1, type="notification.rate_limited", subject=over["id"])
    await log.wait_events(1, type="notification.duplicate", subject=again["id"])
    await log.wait_events(1, type="notification.rejected", subject=invalid["id"])

    duplicate = await _why(settings, str(again["id"]))
    assert f"duplicate: key 'k-1' was already used by notification {first['id']}" in duplicate
    limited = await _why(settings, str(over["id"]))
    assert "rate limited: the user already had 1 low-priority notifications accepted in the last 3600 s" in limited

    async def rejected_and_dead_lettered() -> str | None:
        # Ingest appends the rejection and copies the raw record to the dead-letter topic: both must be there.
        out = await _why(settings, str(invalid["id"]))
        return out if "request dead-lettered" in out else None

    rejected = await eventually(rejected_and_dead_lettered, timeout=30, what="the rejected request dead-lettered")
    assert "decision: not accepted: rejected:" in rejected and "title" in rejected
    assert f"the raw request was dead-lettered (from {names.request('high')}/" in rejected

    async def dead_lettered() -> str | None:
        result = await herald(settings, "why", broken_id, "--json")
        return result.stdout if result.status == 0 else None

    explained = json.loads(await eventually(dead_lettered, timeout=30, what="the broken request dead-lettered"))
    assert explained["decision"] == "dead_lettered"
    assert "malformed JSON" in explained["decision_text"]


async def test_unknown_ids_and_an_unreachable_broker_fail_in_one_line(stack: Stack, settings: Settings) -> None:
    assert stack.topics is not None
    # Every topic but the scheduler's, which the running stack ticks on by itself.
    topics = [t for t in stack.topics.names.all if t != stack.topics.names.scheduled]
    before = await end_offsets(settings, topics)
    unknown = await herald(settings, "why", "no-such-notification")
    assert unknown.status == 1
    assert unknown.stderr.strip().splitlines()[-1] == (
        "herald why: unknown notification id no-such-notification: no record of the event log or dead letters"
    )
    down = await herald(settings, "why", "x", HERALD_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}")
    assert down.status == 1 and "cannot reach the Kafka broker" in down.stderr and "Traceback" not in down.stderr
    assert await end_offsets(settings, topics) == before
