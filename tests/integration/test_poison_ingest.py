"""Poison records on a real broker: every one is dead-lettered with a reason, the ingest
agents keep running, and good requests behind them on the same topic are accepted.

Before the fix a record nested 5,000 deep raised ``RecursionError`` and a lone surrogate
in a user id raised ``UnicodeEncodeError``, both outside the agent's error handling: the
agent crashed, the record was dropped with no dead letter.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

import streams.ingest
from engine.settings import Settings
from herald.stack import Stack, run_stack
from schemas.codec import decode
from schemas.errors import InvalidMessage
from schemas.limits import MAX_ID_LENGTH, MAX_JSON_DEPTH
from tests.integration.stream_core_support import ScriptedEmailSink, core_settings
from tests.support.hostile_json import base_request, hostile_document
from tests.support.kafka import publish, request
from tests.support.log_reader import TopicTail

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str, redis_url: str) -> Settings:
    return core_settings(kafka_bootstrap, redis_url)


@pytest.fixture(scope="module")
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with run_stack(settings, worker=True, projector=False, api=False, sinks=[ScriptedEmailSink()]) as running:
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


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _poison(user: str) -> list[tuple[str, bytes, str]]:
    """``(name, value, expected reason fragment)``: each must be dead-lettered."""

    def envelope(data: str, event_id: str | None = None) -> bytes:
        eid = json.dumps(event_id or str(uuid.uuid4()))
        head = f'{{"specversion":"1.0","type":"notification.requested","id":{eid},"source":"tests","data":'
        return (head + data + "}").encode()

    ok_data = f'{{"user_id":{json.dumps(user)},"title":"t"'
    return [
        ("5000 brackets", _nested(5000).encode(), "nested deeper"),
        ("5000 deep in data.data", envelope(ok_data + ',"data":{"x":' + _nested(5000) + "}}"), "nested deeper"),
        ("just past the depth limit", envelope(ok_data + ',"data":{"x":' + _nested(MAX_JSON_DEPTH) + "}}"), "nested"),
        ("lone surrogate user id", envelope('{"user_id":"ab\\ud800","title":"t"}'), "surrogate"),
        ("lone surrogate event id", envelope(ok_data + "}", event_id="id-\udc80x"), "surrogate"),
        ("over-long event id", envelope(ok_data + "}", event_id="n" * (MAX_ID_LENGTH + 1)), "id"),
        ("over-long user id", envelope('{"user_id":"' + "u" * (MAX_ID_LENGTH + 1) + '","title":"t"}'), "user_id"),
    ]


async def test_poison_records_are_dead_lettered_with_reasons_and_the_agent_keeps_going(
    stack: Stack, log: TopicTail, dead: TopicTail, settings: Settings
) -> None:
    assert stack.topics is not None
    user = f"poison-{uuid.uuid4().hex[:6]}"
    corpus = _poison(user)
    topic = stack.topics.names.request("high")
    records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []
    good_ids: list[str] = []
    for i, (_name, value, _fragment) in enumerate(corpus):
        records.append((f"bad-{i}-{user}".encode(), value, []))
        good = request(user, f"after {i}")
        good_ids.append(good["id"])
        records.append((user.encode(), json.dumps(good).encode(), []))
    # A record whose headers and key cannot all be re-encoded verbatim is still dead-lettered.
    records.append((f"bad-{len(corpus)}-{user}".encode(), b"{not json", [("x-trace", b"\xff\xfe")]))
    await publish(settings.kafka_bootstrap, topic, records)  # type: ignore[arg-type]

    accepted = await log.wait(
        lambda: (
            (found := {e["data"]["notification_id"] for e in log.events(type="notification.accepted", userid=user)})
            >= set(good_ids)
            and found
        ),
        what="every good request behind a poison one accepted",
    )
    assert accepted == set(good_ids)
    mine = await dead.wait(
        lambda: (
            (found := [r for r in dead.records if (r.key or b"").endswith(user.encode())])  # type: ignore[attr-defined]
            and len(found) >= len(corpus) + 1
            and found
        ),
        what="every poison record dead-lettered",
    )
    assert len(mine) == len(corpus) + 1
    by_index: dict[int, Any] = {int((r.key or b"").decode().split("-")[1]): r for r in mine}  # type: ignore[attr-defined]
    for i, (name, value, fragment) in enumerate(corpus):
        record = by_index[i]
        error = dict(record.headers)["herald-error"].decode()
        assert fragment in error, f"{name}: {error!r} lacks {fragment!r}"
        assert record.value == value, f"{name}: the raw bytes are kept"
    assert dict(by_index[len(corpus)].headers)["x-trace"] == b"\xff\xfe"


def _fuzz_corpus(count: int) -> list[bytes]:
    """``count`` hostile requests drawn by Hypothesis (fixed seed), each with its own id."""
    base = base_request("fuzz-user")
    drawn: list[bytes] = []

    @hypothesis_settings(
        max_examples=count, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(doc=hostile_document(base))
    def collect(doc: bytes) -> None:
        drawn.append(doc)

    collect()
    return [doc.replace(base["id"].encode(), f"fz-{i}-{uuid.uuid4().hex[:8]}".encode()) for i, doc in enumerate(drawn)]


# Drawn at import, before any stack runs (Hypothesis and the Kafka clients' threads).
FUZZ = _fuzz_corpus(120)


async def test_hostile_records_are_each_accepted_or_dead_lettered_with_a_reason(
    stack: Stack, log: TopicTail, dead: TopicTail, settings: Settings
) -> None:
    assert stack.topics is not None
    tag = uuid.uuid4().hex[:6]
    records = [(f"fz-{i}-{tag}".encode(), value) for i, value in enumerate(FUZZ)]
    await publish(settings.kafka_bootstrap, stack.topics.names.request("medium"), records)  # type: ignore[arg-type]
    canary_user = f"canary-{tag}"
    canary = request(canary_user, "after the fuzz")
    await publish(
        settings.kafka_bootstrap,
        stack.topics.names.request("medium"),
        [(canary_user.encode(), json.dumps(canary).encode())],  # type: ignore[arg-type]
    )
    await log.wait_events(1, type="notification.accepted", subject=canary["id"], within=60)

    def settled() -> list[int]:
        dead_keys = {r.key for r in dead.records}  # type: ignore[attr-defined]
        pending = []
        for i, value in enumerate(FUZZ):
            if f"fz-{i}-{tag}".encode() in dead_keys:
                continue
            try:
                env = decode(value)
            except InvalidMessage:
                pending.append(i)  # undecodable and not dead-lettered (yet)
                continue
            if not log.events(subject=env.id):
                pending.append(i)
        return pending

    await log.wait(lambda: not settled(), within=60, what="every hostile record accepted or dead-lettered")
    mine = [r for r in dead.records if (r.key or b"").endswith(tag.encode())]  # type: ignore[attr-defined]
    assert mine, "the corpus holds records Herald must refuse"
    assert all(dict(r.headers)["herald-error"] for r in mine)  # type: ignore[attr-defined]
    assert not stack.supervisor.failures


async def test_a_decoder_failure_of_any_kind_is_dead_lettered_and_the_agent_keeps_going(
    stack: Stack, log: TopicTail, dead: TopicTail, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bounded parser leaves no known way to make the decoder raise anything but
    # InvalidMessage; a decoder bug is injected to prove ingest would survive one too.
    real = streams.ingest.decode  # type: ignore[attr-defined]

    def buggy(raw: bytes | None, *args: Any, **kwargs: Any) -> Any:
        if raw is not None and b"inject-decoder-bug" in raw:
            raise RecursionError("maximum recursion depth exceeded (injected)")
        return real(raw, *args, **kwargs)

    monkeypatch.setattr(streams.ingest, "decode", buggy)
    assert stack.topics is not None
    user = f"bug-{uuid.uuid4().hex[:6]}"
    good = request(user, "after the bug")
    records = [
        (f"bad-0-{user}".encode(), b'{"inject-decoder-bug": true}'),
        (user.encode(), json.dumps(good).encode()),
    ]
    await publish(settings.kafka_bootstrap, stack.topics.names.request("low"), records)  # type: ignore[arg-type]
    await log.wait_events(1, type="notification.accepted", subject=good["id"])
    [letter] = await dead.wait(
        lambda: [r for r in dead.records if r.key == f"bad-0-{user}".encode()],  # type: ignore[attr-defined]
        what="the record the decoder choked on, dead-lettered",
    )
    assert dict(letter.headers)["herald-error"].startswith(b"undecodable: RecursionError")


async def test_80_records_nested_5000_deep_do_not_stall_high_priority_ingest(
    stack: Stack, log: TopicTail, dead: TopicTail, settings: Settings
) -> None:
    # Issue 14, fault 3: each such record used to crash the agent (restarted ~5 s later):
    # 80 of them held high-priority ingest for ~400 s.
    assert stack.topics is not None
    user = f"flood-{uuid.uuid4().hex[:6]}"
    good = request(user, "behind the flood")
    records = [(f"deep-{i}-{user}".encode(), _nested(5000).encode()) for i in range(80)]
    records.append((user.encode(), json.dumps(good).encode()))
    started = time.monotonic()
    await publish(settings.kafka_bootstrap, stack.topics.names.request("high"), records)  # type: ignore[arg-type]
    await log.wait_events(1, type="notification.accepted", subject=good["id"], within=30)
    elapsed = time.monotonic() - started
    letters = await dead.wait(
        lambda: (
            (found := [r for r in dead.records if (r.key or b"").endswith(user.encode())])  # type: ignore[attr-defined]
            and len(found) >= 80
            and found
        ),
        what="80 dead letters",
    )
    assert len(letters) == 80
    assert all(b"nested deeper" in dict(r.headers)["herald-error"] for r in letters)  # type: ignore[attr-defined]
    assert elapsed < 15, f"the good request behind 80 poison records took {elapsed:.1f}s"
