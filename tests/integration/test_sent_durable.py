"""A sink's "sent" record is on the broker before the delivery's outcome is: a worker killed after
the provider answered leaves its replacement the pair, so the email or push is not sent twice.

The sent pair is a Faust table entry; a plain table write only queues its changelog record,
which Faust produces a little later. A worker killed by SIGKILL in that gap (the fault suite
saw it: an email or a push sent twice after a kill -9) restored the table without the pair and
sent again. The test observes the moment the outcome (``delivery.succeeded``) is about to be
appended: the pair's changelog record must be acknowledged by the broker by then (its future
done), and a consumer of the test's own finds it on the changelog topic.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

import streams.delivery_attempt as delivery_attempt
from engine.settings import Settings
from herald.stack import Stack, run_stack
from streams.sent_targets import SentTargets
from tests.integration.stream_core_support import ScriptedEmailSink, core_settings
from tests.support.kafka import publish, request
from tests.support.log_reader import TopicTail

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sink() -> ScriptedEmailSink:
    return ScriptedEmailSink()


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str, redis_url: str) -> Settings:
    return core_settings(kafka_bootstrap, redis_url, retry_max_attempts=1, delivery_timeout_seconds=2)


@pytest.fixture(scope="module")
async def stack(settings: Settings, sink: ScriptedEmailSink) -> AsyncIterator[Stack]:
    async with run_stack(settings, worker=True, projector=False, api=False, sinks=[sink]) as running:
        yield running


async def changelog_keys(bootstrap: str, topic: str) -> set[bytes]:
    """Every key on ``topic`` now (read from the beginning to the end offsets of this moment)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or set())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        keys: set[bytes] = set()
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                keys.update(r.key for r in records if r.key is not None)
        return keys
    finally:
        await consumer.stop()


async def test_the_sent_pair_is_on_the_changelog_before_the_outcome_is_recorded(
    stack: Stack, settings: Settings, sink: ScriptedEmailSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stack.faust_app is not None and stack.topics is not None
    table: Any = stack.faust_app.tables["herald.sink.email.sent"]
    changelog = table.changelog_topic.get_topic_name()
    acked_at_outcome: dict[str, bool] = {}
    on_changelog_at_outcome: dict[str, bool] = {}
    written: dict[str, Any] = {}
    record = delivery_attempt._record
    # aiokafka's producer behind Faust's: every produce of the app reaches it, whichever path it takes.
    producer = await stack.faust_app.maybe_start_producer()
    client: Any = producer._producer  # type: ignore[attr-defined]
    send = client.send

    async def spy(topic: str, value: bytes | None = None, key: bytes | None = None, **kwargs: Any) -> Any:
        sent = await send(topic, value, key=key, **kwargs)
        if topic == changelog and key is not None:  # the pair's changelog record: its future, acked?
            text = key.decode()
            written[json.loads(text) if text.startswith('"') else text] = sent
        return sent

    async def observed(*args: Any, **kwargs: Any) -> None:
        cause, target, failure = args[3], args[5], args[8]
        if failure is None:  # the provider answered: a kill from here on must not lead to a second send
            key = SentTargets.key(str(cause.data.notification_id), target)
            acked_at_outcome[key] = key in written and written[key].done() and not written[key].exception()
            keys = await changelog_keys(settings.kafka_bootstrap, changelog)
            on_changelog_at_outcome[key] = json.dumps(key).encode() in keys or key.encode() in keys
        await record(*args, **kwargs)

    monkeypatch.setattr(client, "send", spy)
    monkeypatch.setattr(delivery_attempt, "_record", observed)
    log = TopicTail(settings.kafka_bootstrap, stack.topics.names.events)
    await log.start()
    try:
        users = [f"durable-{uuid.uuid4().hex[:6]}-{i}" for i in range(3)]
        bodies = [request(user, "sent once", channels=["email"]) for user in users]
        topic = stack.topics.names.request("high")
        for user, body in zip(users, bodies, strict=True):
            await publish(settings.kafka_bootstrap, topic, [(user.encode(), json.dumps(body).encode())])
        for body in bodies:
            await log.wait_events(1, type="delivery.succeeded", subject=body["id"])
    finally:
        await log.stop()
    keys = {SentTargets.key(b["id"], f"{u}@example.test") for u, b in zip(users, bodies, strict=True)}
    assert set(acked_at_outcome) == keys
    assert all(acked_at_outcome.values()), (
        f"changelog record not acked when the outcome was recorded: {acked_at_outcome}"
    )
    assert all(on_changelog_at_outcome.values()), on_changelog_at_outcome
    assert all(len(sink.sends_for(b["id"])) == 1 for b in bodies)
