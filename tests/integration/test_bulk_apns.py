"""Bulk push: ``POST /api/notifications/bulk`` to 1,250 device tokens -> each received by APNs exactly once.

The whole stack (API, projector, worker with the APNs sink) against the APNs emulator.
The 1,250 devices (250 users with 5 each) are registered by appending
``device.registered`` to the event log, as ``POST /api/devices`` does; the bulk endpoint
resolves tokens to owners through the projection (in chunks of 1,000: the bulk spans two),
the sink through its Faust table. The 10,000-device figure is ``benchmarks.bulk``'s, which
checks every token once at that size with the roles as processes; here the size only has to
exceed the chunk and the sink's 100 pushes in flight.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from api.auth import SCOPE_WRITE, mint_token
from engine.settings import Settings
from herald.apns_emulator import ApnsEmulator, generate_signing_key
from herald.stack import Stack, run_stack
from projections.queries import NotificationQueries
from schemas.codec import encode
from schemas.envelope import Envelope
from schemas.events import DeviceRegistered
from schemas.ids import uuid7
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TEAM_ID, KEY_ID, TOPIC = "TEAM123456", "KEY1234567", "com.example.herald"
USERS, PER_USER = 250, 5


@pytest.fixture
async def emulator_and_key() -> AsyncIterator[tuple[ApnsEmulator, str]]:
    private_pem, public_pem = generate_signing_key()
    emulator = ApnsEmulator(keys={KEY_ID: (TEAM_ID, public_pem)}, topics=[TOPIC], inspect_port=None, max_records=50_000)
    async with emulator:
        yield emulator, private_pem


@pytest.fixture
async def stack(settings: Settings, emulator_and_key: tuple[ApnsEmulator, str]) -> AsyncIterator[Stack]:
    emulator, private_pem = emulator_and_key
    host, port = emulator.address
    configured = settings.replace(
        apns_key=private_pem,
        apns_key_id=KEY_ID,
        apns_team_id=TEAM_ID,
        apns_topic=TOPIC,
        apns_server=f"{host}:{port}",
        apns_ca_path=emulator.ca_path,
        # Producers batch as in production: this test never restarts a worker (no changelog
        # recovery) and never reads end offsets, the two places Tansu's batch limit matters.
        producer_max_batch_size=16384,
    )
    async with run_stack(configured) as running:  # the APNs sink comes from the settings
        yield running


async def _register(settings: Settings, topic: str, devices: list[tuple[str, str]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        now = datetime.now(UTC)
        futures = [
            await producer.send(
                topic,
                key=user.encode(),
                value=encode(
                    Envelope(
                        id=uuid7(),
                        source="tests",
                        time=now,
                        data=DeviceRegistered(user, token),
                        subject=None,
                        userid=user,
                    )
                ),
            )
            for user, token in devices
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def test_bulk_to_device_tokens_reaches_each_exactly_once(
    stack: Stack, settings: Settings, emulator_and_key: tuple[ApnsEmulator, str]
) -> None:
    emulator, _ = emulator_and_key
    assert stack.topics is not None
    assert stack.engine is not None
    tag = uuid.uuid4().hex[:6]
    devices = [(f"bulk-{tag}-{u}", secrets.token_hex(32)) for u in range(USERS) for _ in range(PER_USER)]
    tokens = [t for _, t in devices]
    await _register(settings, stack.topics.names.events, devices)
    queries = NotificationQueries(stack.engine)

    async def projected() -> bool:
        return len(await queries.device_owners(tokens)) == len(tokens)

    # One process runs worker, projector and API here; on a loaded machine this takes a minute.
    await eventually(projected, timeout=150, interval=0.5, what=f"{len(tokens)} devices projected")

    service = mint_token(settings, "bulk-service", scopes=(SCOPE_WRITE,))
    base = f"http://{settings.http_host}:{stack.http_port}"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {service}"}) as http:
        async with http.post(
            f"{base}/api/notifications/bulk",
            json={
                "device_tokens": tokens,
                "title": "Flash sale",
                "body": "Everything -20% for an hour",
                "priority": "low",
            },
        ) as resp:
            assert resp.status == 202, await resp.text()
            answer = await resp.json()
        assert answer["requested"] == len(tokens)
        assert answer["refused"] == []

        wanted = set(tokens)

        async def all_received() -> int | None:
            got = sum(1 for r in emulator.received if r.token in wanted)
            return got if got >= len(tokens) else None

        await eventually(all_received, timeout=300, interval=1.0, what=f"{len(tokens)} pushes at the emulator")

        async def all_delivered() -> dict[str, int] | None:
            async with http.get(f"{base}{answer['status_url']}") as resp:
                if resp.status != 200:
                    return None
                summary = await resp.json()
            return summary if summary["by_status"].get("delivered") == len(tokens) else None

        await eventually(all_delivered, timeout=150, interval=1.0, what=f"{len(tokens)} deliveries projected")

    received = [r for r in emulator.received if r.token in wanted]
    per_token = Counter(r.token for r in received)
    assert len(per_token) == len(tokens)
    assert set(per_token.values()) == {1}, "some token got a push more than once"
    assert {r.status for r in received} == {200}
    assert {r.headers["apns-priority"] for r in received} == {"5"}
