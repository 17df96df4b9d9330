"""The sinks' sent-targets table is bounded: a pair is remembered through the retry
horizon (a repeated work record sends nothing) and forgotten after it, in the local
store and, by a tombstone, in the changelog (issue 10, item 10).

Before the fix every (notification, target) ever sent stayed in the table for good.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine.settings import ConfigError, Settings
from herald.stack import Stack, run_stack
from streams.metrics import DUPLICATE_SENDS_SUPPRESSED, SENT_TARGETS_EXPIRED
from streams.sent_targets import SentTargets, retry_horizon, sent_ttl
from tests.integration.stream_core_support import ScriptedEmailSink, core_settings
from tests.support.kafka import publish, request
from tests.support.log_reader import TopicTail
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow
TTL = 2.0


@pytest.fixture(scope="module")
def sink() -> ScriptedEmailSink:
    return ScriptedEmailSink()


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str, redis_url: str) -> Settings:
    return core_settings(
        kafka_bootstrap, redis_url, retry_max_attempts=1, delivery_timeout_seconds=0.5, sent_targets_ttl_seconds=TTL
    )


@pytest.fixture(scope="module")
async def stack(settings: Settings, sink: ScriptedEmailSink) -> AsyncIterator[Stack]:
    async with run_stack(settings, worker=True, projector=False, api=False, sinks=[sink]) as running:
        yield running


@pytest.fixture(scope="module")
async def log(stack: Stack, settings: Settings) -> AsyncIterator[TopicTail]:
    tail = TopicTail(settings.kafka_bootstrap, stack.topics.names.events)  # type: ignore[union-attr]
    await tail.start()
    yield tail
    await tail.stop()


def test_a_ttl_shorter_than_the_retry_horizon_is_refused() -> None:
    settings = Settings(retry_max_attempts=3, retry_base_delay_seconds=60, sent_targets_ttl_seconds=30)
    assert retry_horizon(settings) > 180
    with pytest.raises(ConfigError, match="retry horizon"):
        sent_ttl(settings)
    assert sent_ttl(Settings()) >= 2 * retry_horizon(Settings())


async def test_a_sent_pair_blocks_a_repeat_within_the_horizon_and_is_forgotten_after_it(
    stack: Stack, settings: Settings, sink: ScriptedEmailSink, log: TopicTail
) -> None:
    assert stack.faust_app is not None and stack.topics is not None
    table: Any = stack.faust_app.tables["herald.sink.email.sent"]
    user = f"ttl-{uuid.uuid4().hex[:6]}"
    first = request(user, "first", channels=["email"])
    topic = stack.topics.names.request("high")
    await publish(settings.kafka_bootstrap, topic, [(user.encode(), json.dumps(first).encode())])  # type: ignore[arg-type]
    [accepted] = await log.wait_events(1, type="notification.accepted", subject=first["id"])
    await log.wait_events(1, type="delivery.succeeded", subject=first["id"])
    key = SentTargets.key(first["id"], f"{user}@example.test")
    assert table.get(key) is not None
    sent_at = time.time()

    # Within the horizon: the same work record again sends nothing.
    suppressed = DUPLICATE_SENDS_SUPPRESSED.labels("email")._value.get()
    work = stack.topics.names.delivery("email")
    await publish(settings.kafka_bootstrap, work, [(user.encode(), json.dumps(accepted).encode())])  # type: ignore[arg-type]

    async def repeat_seen() -> bool:
        return bool(DUPLICATE_SENDS_SUPPRESSED.labels("email")._value.get() > suppressed)

    await eventually(repeat_seen, what="the repeated work record to be suppressed")
    assert len(sink.sends_for(first["id"])) == 1

    # After it: the next work on the same partition (same user) deletes the old pair.
    async def horizon_passed() -> bool:
        return time.time() > sent_at + TTL

    await eventually(horizon_passed, timeout=TTL + 5, what="the sent-targets TTL to pass")
    expired_before = SENT_TARGETS_EXPIRED.labels("email")._value.get()
    second = request(user, "second", channels=["email"])
    await publish(settings.kafka_bootstrap, topic, [(user.encode(), json.dumps(second).encode())])  # type: ignore[arg-type]
    await log.wait_events(1, type="delivery.succeeded", subject=second["id"])

    async def forgotten() -> bool:
        return table.get(key) is None

    await eventually(forgotten, what="the expired pair deleted from the table")
    assert SENT_TARGETS_EXPIRED.labels("email")._value.get() > expired_before
    assert table.get(SentTargets.key(second["id"], f"{user}@example.test")) is not None
    # The deletion is a tombstone on the changelog: compaction bounds the topic as well.
    changelog = TopicTail(settings.kafka_bootstrap, table.changelog_topic.get_topic_name())
    await changelog.start()
    try:
        await changelog.wait(
            lambda: any(_tombstone_of(record, key) for record in changelog.records),
            what="a tombstone for the expired pair",
        )
    finally:
        await changelog.stop()


def _tombstone_of(record: Any, key: str) -> bool:
    # Faust serialises str keys of the table as JSON.
    return record.value is None and record.key in (json.dumps(key).encode(), key.encode())
