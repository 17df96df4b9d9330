"""Poison records for the agents behind ingest, on a real broker: the scheduler and the
sinks dead-letter what they cannot read, with the reason, and keep working.

They share ingest's ``decode or dead-letter`` helper (``streams.dead_letters``): before it,
an unknown scheduler command was only logged (the record lost), and a decoder failure
other than ``InvalidMessage`` in a sink crashed its agent.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import streams.dead_letters
from engine.settings import Settings
from herald.stack import Stack, run_stack
from schemas.codec import format_time
from tests.integration.stream_core_support import ScriptedEmailSink, core_settings
from tests.support.kafka import publish, request
from tests.support.log_reader import Record, TopicTail

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sink() -> ScriptedEmailSink:
    return ScriptedEmailSink()


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str, redis_url: str) -> Settings:
    return core_settings(kafka_bootstrap, redis_url, scheduler_tick_seconds=0.25)


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


@pytest.fixture(scope="module")
async def dead(stack: Stack, settings: Settings) -> AsyncIterator[TopicTail]:
    tail = TopicTail(settings.kafka_bootstrap, stack.topics.names.deadletter)  # type: ignore[union-attr]
    await tail.start()
    yield tail
    await tail.stop()


async def _letters(dead: TopicTail, keys: list[bytes]) -> dict[bytes, dict[str, bytes]]:
    """The dead letters of ``keys`` (waited for), as their headers by key."""

    def found() -> list[Record]:
        mine = [r for r in dead.records if r.key in keys]
        return mine if len(mine) >= len(keys) else []

    letters = await dead.wait(found, what=f"{len(keys)} dead letters")
    return {r.key: dict(r.headers) for r in letters if r.key is not None}


async def test_unusable_scheduler_commands_are_dead_lettered_and_delayed_delivery_goes_on(
    stack: Stack, log: TopicTail, dead: TopicTail, sink: ScriptedEmailSink, settings: Settings
) -> None:
    assert stack.topics is not None
    user = f"sched-{uuid.uuid4().hex[:6]}"
    poison = {
        b"unknown op": (b'{"op":"reschedule"}', "scheduler: unknown command 'reschedule'"),
        b"not json": (b"{oops", "scheduler: not JSON"),
        b"not an object": (b"[1,2]", "scheduler: unknown command None"),
        b"schedule without item": (b'{"op":"schedule"}', "scheduler: malformed schedule command: KeyError"),
        b"cancel of garbage": (
            b'{"op":"cancel","cause":{"x":1},"notification_id":"n","reason":"read"}',
            "scheduler: cancel command:",
        ),
    }
    records = [(name + b"-" + user.encode(), value) for name, (value, _) in poison.items()]
    await publish(settings.kafka_bootstrap, stack.topics.names.scheduled, records)  # type: ignore[arg-type]
    later = request(
        user,
        "after the poison",
        channels=["email"],
        deliver_after=format_time(datetime.now(UTC) + timedelta(seconds=1)),
    )
    await publish(
        settings.kafka_bootstrap, stack.topics.names.request("low"), [(user.encode(), json.dumps(later).encode())]
    )

    letters = await _letters(dead, [key for key, _ in records])
    for name, (_value, reason) in poison.items():
        headers = letters[name + b"-" + user.encode()]
        assert headers["herald-error"].decode().startswith(reason), (name, headers["herald-error"])
        assert headers["herald-source-topic"] == stack.topics.names.scheduled.encode()
    await log.wait_events(1, type="delivery.succeeded", subject=later["id"], within=20)
    assert len(sink.sends_for(later["id"])) == 1
    assert not stack.supervisor.failures


@pytest.mark.parametrize("channel", ["email", "websocket"])
async def test_a_sink_dead_letters_what_it_cannot_decode_whatever_the_decoder_raises(
    channel: str,
    stack: Stack,
    log: TopicTail,
    dead: TopicTail,
    sink: ScriptedEmailSink,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The bounded parser leaves no known way to make the decoder raise anything but
    # InvalidMessage; a decoder bug is injected to prove the sinks survive one too.
    real = streams.dead_letters.decode

    def buggy(raw: bytes | None, *args: Any, **kwargs: Any) -> Any:
        if raw is not None and b"inject-decoder-bug" in raw:
            raise RecursionError("maximum recursion depth exceeded (injected)")
        return real(raw, *args, **kwargs)

    monkeypatch.setattr(streams.dead_letters, "decode", buggy)
    assert stack.topics is not None
    user = f"{channel}-{uuid.uuid4().hex[:6]}"
    topic = stack.topics.names.delivery(channel)
    bug, wrong = f"bug-{user}".encode(), f"wrong-{user}".encode()
    await publish(
        settings.kafka_bootstrap,
        topic,
        [(bug, b'{"inject-decoder-bug": true}'), (wrong, json.dumps(request(user, "not accepted yet")).encode())],
    )

    letters = await _letters(dead, [bug, wrong])
    assert letters[bug]["herald-error"].startswith(b"undecodable: RecursionError")
    assert letters[wrong]["herald-error"] == b"expected notification.accepted, got notification.requested"
    assert {letters[k]["herald-source-topic"] for k in (bug, wrong)} == {topic.encode()}
    if channel == "email":  # the agent is still there: the next work is delivered
        good = request(user, "after the poison", channels=["email"])
        await publish(
            settings.kafka_bootstrap, stack.topics.names.request("high"), [(user.encode(), json.dumps(good).encode())]
        )
        await log.wait_events(1, type="delivery.succeeded", subject=good["id"])
    assert not stack.supervisor.failures
