"""Devices are (platform, token), their platforms those the channel registry declares (issue 13).

The whole stack (API, projector, worker with the APNs sink) against the APNs emulator,
with a test-only device channel (``tests.support.pager_channel``: platform ``pageros``)
declared into the registry: a user registers an ios token and pageros tokens (one the
very same string as the ios token: another device), REST lists both platforms, and a
push on the APNs channel goes to the ios device only. An unknown platform is refused
with the platforms there are.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from api.auth import SCOPE_WRITE
from engine.settings import Settings
from herald.apns_emulator import ApnsEmulator
from herald.stack import Stack, run_stack
from streams.apns_sink import ApnsSink
from streams.device_registry import DeviceRegistry
from tests.integration.stream_core_support import core_settings
from tests.support.api import Api
from tests.support.apns import apns_settings
from tests.support.log_reader import TopicTail
from tests.support.pager_channel import declared
from tests.support.settings import reset_schema
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pager() -> Iterator[None]:
    with declared():
        yield


@pytest.fixture(scope="module")
def settings(
    pager: None,
    kafka_bootstrap: str,
    database_url: str,
    redis_url: str,
    emulator: ApnsEmulator,
    signing_key: tuple[str, str],
) -> Settings:
    reset_schema(database_url)
    return core_settings(
        kafka_bootstrap, redis_url, database_url=database_url, **apns_settings(emulator, signing_key[0])
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


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _api(stack: Stack, settings: Settings, http: aiohttp.ClientSession, user: str, *scopes: str) -> Api:
    return Api.for_user(http, f"http://127.0.0.1:{stack.http_port}", settings, user, *scopes)


async def _push(service: Api, user: str, title: str) -> str:
    reply = await service.post(
        "/api/notifications", json={"user_id": user, "title": title, "body": "b", "channels": ["apns"]}
    )
    assert reply.status == 202, reply.body
    return str(reply.body["id"])


def _pushed(emulator: ApnsEmulator, nid: str) -> list[str]:
    return sorted(r.token for r in emulator.received if r.payload and r.payload.get("notification_id") == nid)


async def test_the_apns_sink_pushes_only_to_the_ios_device_of_a_user_with_devices_of_two_platforms(
    stack: Stack,
    settings: Settings,
    http: aiohttp.ClientSession,
    emulator: ApnsEmulator,
    log: TopicTail,
    registry: DeviceRegistry,
) -> None:
    user = f"dana-{uuid.uuid4().hex[:6]}"
    api, service = _api(stack, settings, http, user), _api(stack, settings, http, "billing", SCOPE_WRITE)
    phone, pager = secrets.token_hex(32), secrets.token_hex(32)  # both would be valid APNs tokens
    ios = await api.post("/api/devices", json={"device_token": phone})
    assert (ios.status, ios.body["platform"], ios.headers["Location"]) == (201, "ios", f"/api/devices/{phone}")
    twin = await api.post("/api/devices", json={"device_token": phone, "platform": "pageros", "name": "twin"})
    assert (twin.status, twin.body["platform"], twin.body["active"]) == (201, "pageros", True)
    assert twin.headers["Location"] == f"/api/devices/{phone}?platform=pageros"
    assert (await api.post("/api/devices", json={"device_token": pager, "platform": "pageros"})).status == 201
    listed = (await api.get("/api/devices?active=true")).body["results"]
    assert sorted((d["platform"], d["device_token"]) for d in listed) == sorted(
        [("ios", phone), ("pageros", phone), ("pageros", pager)]
    )

    # On the log: the ios registration as version 1 wrote it, the pageros ones as version 2.
    registered = await log.wait_events(3, type="device.registered", userid=user)
    assert [(e.get("dataschema"), e["data"]["platform"]) for e in registered] == [
        (None, "ios"),
        ("herald:device.registered:v2", "pageros"),
        ("herald:device.registered:v2", "pageros"),
    ]

    async def registry_has(count: int) -> bool:
        return len(registry.active_tokens_in_order(user)) == count

    await eventually(lambda: registry_has(3), timeout=30, what="the worker's registry holds the three devices")
    assert registry.active_tokens(user, "ios") == [phone]
    assert sorted(registry.active_tokens(user, "pageros")) == sorted([phone, pager])

    nid = await _push(service, user, "to the phone")
    [sent] = await log.wait_events(1, type="delivery.succeeded", subject=nid)
    assert sent["data"]["target"] == phone
    marker = await _push(service, user, "marker")  # same partition, after: every send of nid is done
    await log.wait_events(1, type="delivery.succeeded", subject=marker)
    assert _pushed(emulator, nid) == [phone]
    assert len(log.events(type="delivery.succeeded", subject=nid)) == 1

    async def last_pushed() -> dict[tuple[str, str], str | None]:
        rows = (await api.get("/api/devices")).body["results"]
        return {(d["platform"], d["device_token"]): d["last_notification_at"] for d in rows}

    async def phone_marked() -> bool:
        return (await last_pushed())[("ios", phone)] is not None

    await eventually(phone_marked, timeout=30, what="the ios device's last push in the read model")
    seen = await last_pushed()
    assert seen[("pageros", phone)] is None and seen[("pageros", pager)] is None

    # Deleting the pageros twin leaves the ios device as it was.
    assert (await api.delete(f"/api/devices/{phone}?platform=pageros")).status == 204
    after = {(d["platform"], d["device_token"]): d["status"] for d in (await api.get("/api/devices")).body["results"]}
    assert after == {("ios", phone): "active", ("pageros", phone): "unregistered", ("pageros", pager): "active"}
    [gone] = await log.wait_events(1, type="device.unregistered", userid=user)
    assert (gone["dataschema"], gone["data"]["platform"]) == ("herald:device.unregistered:v2", "pageros")
    await eventually(lambda: registry_has(2), timeout=30, what="the pageros twin gone from the worker's registry")
    assert registry.active_tokens(user, "pageros") == [pager]
    assert registry.active_tokens(user, "ios") == [phone]


async def test_an_unknown_platform_or_a_token_its_platform_refuses_is_422(
    stack: Stack, settings: Settings, http: aiohttp.ClientSession
) -> None:
    api = _api(stack, settings, http, f"erin-{uuid.uuid4().hex[:6]}")
    fax = await api.post("/api/devices", json={"device_token": secrets.token_hex(32), "platform": "fax"})
    assert (fax.status, fax.content_type) == (422, "application/problem+json")
    assert fax.body["platforms"] == ["ios", "pageros"]
    assert "ios" in fax.body["detail"] and "pageros" in fax.body["detail"]
    short = await api.post("/api/devices", json={"device_token": "abc", "platform": "pageros"})
    assert (short.status, short.body["detail"]) == (
        422,
        "device_token of platform pageros: " + "8 to 64 letters or digits (case-sensitive)",
    )
    not_hex = await api.post("/api/devices", json={"device_token": "Z" * 64})
    assert (not_hex.status, not_hex.body["detail"]) == (422, "device_token of platform ios: 64 hexadecimal characters")
    wrong = await api.delete(f"/api/devices/{secrets.token_hex(32)}?platform=fax")
    assert (wrong.status, wrong.body["platforms"]) == (400, ["ios", "pageros"])
    assert (await api.get("/api/devices")).body["results"] == []
