"""Devices and per-user writes under attack (issue 10, items 2, 3, 6 and 12).

The whole stack (API, projector, worker with the APNs sink) against the APNs emulator:
a token taken over by another user stops receiving its previous owner's pushes; one user
registering device after device stays within the per-user cap; a user's writes are
rate-limited with 429; an oversize bulk and a contact with two addresses are refused
before anything is published.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

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
from tests.support.log_reader import TopicTail, log_records
from tests.support.settings import reset_schema

pytestmark = pytest.mark.slow

CAP, BURST = 3, 12


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
        max_devices_per_user=CAP,
        write_burst=BURST,
        write_rate_per_second=0.05,
        bulk_max_targets=50,
        bulk_max_encoded_bytes=64 * 1024,
    )


@pytest.fixture(scope="module")
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with run_stack(settings, sinks=[ApnsSink(settings, DeviceRegistry())]) as s:
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


def _user(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


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


async def test_a_token_taken_over_by_another_user_no_longer_gets_the_previous_owner_s_pushes(
    stack: Stack, settings: Settings, http: aiohttp.ClientSession, emulator: ApnsEmulator, log: TopicTail
) -> None:
    alice_id, bob_id, token = _user("alice"), _user("bob"), secrets.token_hex(32)
    alice, bob = _api(stack, settings, http, alice_id), _api(stack, settings, http, bob_id)
    service = _api(stack, settings, http, "billing", SCOPE_WRITE)
    assert (await alice.post("/api/devices", json={"device_token": token})).status == 201
    before = await _push(service, alice_id, "for alice, on her phone")
    await log.wait_events(1, type="delivery.succeeded", subject=before)
    assert _pushed(emulator, before) == [token]

    # The phone is sold: bob's app registers the same token.
    taken = await bob.post("/api/devices", json={"device_token": token})
    assert (taken.status, taken.body["user_id"], taken.body["active"]) == (201, bob_id, True)
    assert alice_id not in str(taken.body)  # bob learns nothing about the previous owner
    assert (await alice.get("/api/devices")).body["results"] == []
    [revoked] = await log.wait_events(1, type="device.unregistered", userid=alice_id)
    assert revoked["data"]["device_token"] == token

    after = await _push(service, alice_id, "for alice, after the sale")
    [cancelled] = await log.wait_events(1, type="delivery.cancelled", subject=after)
    assert cancelled["data"]["channel"] == "apns"
    for_bob = await _push(service, bob_id, "for bob")
    await log.wait_events(1, type="delivery.succeeded", subject=for_bob)
    assert _pushed(emulator, for_bob) == [token]
    assert _pushed(emulator, after) == []  # alice's push never reached the phone bob now holds

    # Registry and read model agree from either side: bob deleting it leaves alice nothing either.
    assert (await bob.delete(f"/api/devices/{token}")).status == 204
    assert (await alice.delete(f"/api/devices/{token}")).status == 404


async def test_registering_device_after_device_keeps_the_newest_within_the_cap(
    stack: Stack, settings: Settings, http: aiohttp.ClientSession, emulator: ApnsEmulator, log: TopicTail
) -> None:
    user = _user("hoarder")
    api, service = _api(stack, settings, http, user), _api(stack, settings, http, "billing", SCOPE_WRITE)
    tokens = [secrets.token_hex(32) for _ in range(CAP + 3)]
    for token in tokens:
        assert (await api.post("/api/devices", json={"device_token": token})).status == 201
    active = (await api.get("/api/devices?active=true")).body["results"]
    assert sorted(d["device_token"] for d in active) == sorted(tokens[-CAP:])
    dropped = await log.wait_events(len(tokens) - CAP, type="device.unregistered", userid=user)
    assert sorted(e["data"]["device_token"] for e in dropped) == sorted(tokens[:-CAP])

    nid = await _push(service, user, "to every device")
    await log.wait_events(CAP, type="delivery.succeeded", subject=nid)
    # A later push to the same user is handled after this one (one partition, in order):
    # once it is delivered, every send of the first is on the emulator.
    marker = await _push(service, user, "marker")
    await log.wait_events(CAP, type="delivery.succeeded", subject=marker)
    assert _pushed(emulator, nid) == sorted(tokens[-CAP:])


async def test_a_user_s_writes_beyond_the_burst_get_429_and_publish_nothing(
    stack: Stack, settings: Settings, http: aiohttp.ClientSession
) -> None:
    user = _user("flood")
    api, other = _api(stack, settings, http, user), _api(stack, settings, http, _user("calm"))
    service = _api(stack, settings, http, "billing", SCOPE_WRITE)
    statuses = [(await api.delete(f"/api/devices/{secrets.token_hex(32)}")).status for _ in range(BURST)]
    assert statuses == [404] * BURST
    token = secrets.token_hex(32)
    refused = await api.post("/api/devices", json={"device_token": token})
    assert (refused.status, refused.content_type) == (429, "application/problem+json")
    assert int(refused.headers["Retry-After"]) >= 1
    assert "per user" in refused.body["detail"]
    for call in (
        api.patch("/api/notifications/anything/read"),
        api.post("/api/notifications", json={"title": "t", "body": "b"}),
        api.post("/api/notifications/read-all"),
    ):
        assert (await call).status == 429
    assert (await api.get("/api/devices")).body["results"] == []  # reads are not limited; nothing registered
    assert (await other.post("/api/devices", json={"device_token": secrets.token_hex(32)})).status == 201
    assert (await service.put(f"/api/users/{user}/contact", json={"email": "f@example.com"})).status == 200


async def test_a_bulk_whose_requests_would_be_dead_lettered_is_refused_before_publishing(
    stack: Stack, settings: Settings, http: aiohttp.ClientSession
) -> None:
    service = _api(stack, settings, http, "billing", SCOPE_WRITE)
    prefix = _user("bulk")
    users = [f"{prefix}-{i}" for i in range(30)]
    replies: dict[str, Any] = {
        "each over the request limit": await service.post(
            "/api/notifications/bulk",
            json={"user_ids": users[:2], "title": "t", "body": "x" * 7_000, "data": {"blob": "y" * 10_000}},
        ),
        "too many targets": await service.post(
            "/api/notifications/bulk", json={"user_ids": [f"{prefix}-{i}" for i in range(51)], "title": "t"}
        ),
        "over the bulk budget": await service.post(
            "/api/notifications/bulk", json={"user_ids": users, "title": "t", "body": "x" * 3_000}
        ),
    }
    for name, reply in replies.items():
        assert (reply.status, reply.content_type) == (413, "application/problem+json"), name
    assert f"at most {settings.max_request_bytes}" in replies["each over the request limit"].body["detail"]
    assert "at most 50" in replies["too many targets"].body["detail"]
    assert "split" in replies["over the bulk budget"].body["detail"]
    ok = await service.post("/api/notifications/bulk", json={"user_ids": users[:5], "title": "t", "body": "x" * 3_000})
    assert ok.status == 202
    assert stack.topics is not None
    names = stack.topics.names
    published = [
        r
        for priority in ("high", "medium", "low")
        for r in await log_records(settings.kafka_bootstrap, names.request(priority))
        if str(r.get("data", {}).get("user_id", "")).startswith(prefix)
    ]
    assert sorted(r["data"]["user_id"] for r in published) == sorted(users[:5])  # only the accepted bulk


async def test_a_contact_with_two_addresses_is_refused_and_nothing_is_recorded(
    stack: Stack, settings: Settings, http: aiohttp.ClientSession
) -> None:
    service = _api(stack, settings, http, "billing", SCOPE_WRITE)
    user = _user("carol")
    for email in ("carol@example.com, evil@example.net", "Carol <carol@example.com>", "carol@example.com\nBcc: x@y"):
        reply = await service.put(f"/api/users/{user}/contact", json={"email": email})
        assert (reply.status, reply.content_type) == (422, "application/problem+json"), email
        assert "email" in reply.body["detail"]
    assert (await service.get(f"/api/users/{user}/contact")).status == 404
    accepted = await service.put(f"/api/users/{user}/contact", json={"email": "carol@example.com"})
    assert (accepted.status, accepted.body["email"]) == (200, "carol@example.com")
