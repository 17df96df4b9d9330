"""The worker passes over the log's notification events before Faust's per-record machinery.

The device registry is the worker's only reader of ``herald.events`` and folds only device
and contact events; the records it has no use for are acked as soon as they are fetched
(``streams.internals.consumer_skipping``). On a real broker: the worker still commits the
log to its end, and a contact update among many passed-over events still changes routing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer

from api.publisher import Publisher
from engine.routing import TURNED_OFF
from engine.settings import Settings
from engine.topics import TopicNames
from herald.stack import Stack, run_stack
from schemas.envelope import Envelope
from schemas.events import ContactUpdated
from tests.integration.stream_core_support import core_settings
from tests.support.kafka import committed_to_the_end, publish, request
from tests.support.log_reader import TopicTail

pytestmark = pytest.mark.slow

USERS = 24
"""Enough users that every partition of the log gets events."""


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str, redis_url: str) -> Settings:
    return core_settings(kafka_bootstrap, redis_url)


@pytest.fixture(scope="module")
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with run_stack(settings, worker=True, projector=False, api=False) as running:
        yield running


@pytest.fixture(scope="module")
async def log(stack: Stack, settings: Settings) -> AsyncIterator[TopicTail]:
    async with TopicTail.running(settings.kafka_bootstrap, TopicNames(settings.topic_prefix).events) as tail:
        yield tail


async def test_passed_over_events_are_committed_and_a_contact_among_them_still_routes(
    stack: Stack, settings: Settings, log: TopicTail
) -> None:
    names = TopicNames(settings.topic_prefix)
    run = uuid.uuid4().hex[:6]
    users = [f"skip-{run}-{i}" for i in range(USERS)]

    # 1. Notification events on every partition of the log (accepted, then deferred: nobody is online).
    await _requests(settings, names, users, "first")
    await log.wait_events(USERS, type="delivery.deferred", within=60)
    await _committed_to_the_end(settings, names.events)

    # 2. Now that the log has committed offsets, a contact update behind more notification events.
    mo = f"skip-{run}-contact"
    await _requests(settings, names, users, "second")
    await _append_contact(settings, names, mo, channels=("email",))
    await _requests(settings, names, users, "third")
    body = request(mo, "Mail only", channels=["websocket", "email"])
    contact_request: list[tuple[bytes | None, bytes | None]] = [(mo.encode(), _json(body))]
    await publish(settings.kafka_bootstrap, names.request("medium"), contact_request)

    [cancelled] = await log.wait_events(1, type="delivery.cancelled", subject=body["id"], within=60)
    assert (cancelled["data"]["channel"], cancelled["data"]["reason"]) == ("websocket", TURNED_OFF)
    await log.wait_events(3 * USERS, type="delivery.deferred", within=60)
    await _committed_to_the_end(settings, names.events)
    assert stack.faust_app is not None
    skipped = getattr(stack.faust_app.consumer, "skipped", 0)
    assert skipped >= 2 * USERS, f"only {skipped} log records were acked without delivery"


async def _requests(settings: Settings, names: TopicNames, users: list[str], title: str) -> None:
    records: list[tuple[bytes | None, bytes | None]] = [
        (user.encode(), _json(request(user, title, channels=["websocket"]))) for user in users
    ]
    await publish(settings.kafka_bootstrap, names.request("medium"), records)


async def _append_contact(settings: Settings, names: TopicNames, user: str, *, channels: tuple[str, ...]) -> None:
    """``contact.updated`` appended as the API appends it."""
    env = Envelope(
        id=str(uuid.uuid4()),
        source="tests",
        time=datetime.now(UTC),
        data=ContactUpdated(user_id=user, email=f"{user}@example.test", channels=channels),
        subject=None,
        userid=user,
        correlationid=None,
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await Publisher(producer, names).append([env])
    finally:
        await producer.stop()


async def _committed_to_the_end(settings: Settings, topic: str) -> None:
    """Until the worker's group has committed every partition of ``topic`` up to its end offset."""
    await committed_to_the_end(settings.kafka_bootstrap, settings.app_id, topic)


def _json(body: dict[str, object]) -> bytes:
    return json.dumps(body).encode()
