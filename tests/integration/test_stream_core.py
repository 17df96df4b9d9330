"""The stream core on a real broker: validation and dead letters, rate limits, retries,
scheduled delivery, expiry, and the email fallback cancelled by a read.

One worker serves the whole module (a Faust start costs seconds): each test uses its
own users, and waits on the event log for the decisions it expects.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from prometheus_client import REGISTRY

from api.publisher import Publisher
from engine.settings import Settings
from engine.topics import TopicNames
from herald.stack import Stack, run_stack
from schemas.codec import decode, format_time
from tests.integration.stream_core_support import ScriptedEmailSink, core_settings
from tests.support.kafka import publish, request
from tests.support.log_reader import TopicTail

pytestmark = pytest.mark.slow

FALLBACK_SECONDS = 2.0


@pytest.fixture(scope="module")
def sink() -> ScriptedEmailSink:
    return ScriptedEmailSink()


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str, redis_url: str) -> Settings:
    return core_settings(
        kafka_bootstrap,
        redis_url,
        retry_base_delay_seconds=0.5,
        retry_max_attempts=3,
        retry_jitter=0.1,
        email_fallback_seconds=FALLBACK_SECONDS,
        scheduler_tick_seconds=0.25,
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


@pytest.fixture(scope="module")
async def dead(stack: Stack, settings: Settings) -> AsyncIterator[TopicTail]:
    tail = TopicTail(settings.kafka_bootstrap, stack.topics.names.deadletter)  # type: ignore[union-attr]
    await tail.start()
    yield tail
    await tail.stop()


def _user(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


def _topic(stack: Stack, priority: str) -> str:
    assert stack.topics is not None
    return stack.topics.names.request(priority)


def _raw(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def _counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- validation and dead letters ---------------------------------------------------------------


def _bad_corpus(user: str) -> list[tuple[str, str, bytes | None, list[tuple[str, bytes]], str]]:
    """``(name, priority topic, value, headers, expected reason fragment)`` of invalid requests."""

    def req(**data: Any) -> dict[str, Any]:
        body = request(user, "bad", **data)
        return body

    def with_(body: dict[str, Any], **attrs: Any) -> bytes:
        body = {**body, **attrs}
        return _raw({k: v for k, v in body.items() if v is not None})

    def without(body: dict[str, Any], *names: str) -> bytes:
        return _raw({k: v for k, v in body.items() if k not in names})

    def data_without(*names: str, **extra: Any) -> bytes:
        body = req(**extra)
        body["data"] = {k: v for k, v in body["data"].items() if k not in names}
        return _raw(body)

    binary_headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", str(uuid.uuid4()).encode()),
        ("ce_source", b"tests"),
        ("ce_type", b"notification.requested"),
    ]
    big = req(data={"blob": "x" * (17 * 1024)})
    return [
        ("not json", "high", b"{not json", [], "malformed JSON"),
        ("empty bytes", "low", b"", [], "malformed JSON"),
        ("null value", "medium", None, [], "empty message"),
        ("not utf-8", "low", b"\xff\xfe\xfa", [], "malformed JSON"),
        ("json array", "high", b"[]", [], "must be a JSON object"),
        ("json string", "medium", b'"hello"', [], "must be a JSON object"),
        ("json number", "low", b"42", [], "must be a JSON object"),
        ("json null", "high", b"null", [], "must be a JSON object"),
        ("no specversion", "low", without(req(), "specversion"), [], "specversion"),
        ("old specversion", "medium", with_(req(), specversion="0.3"), [], "unsupported specversion"),
        ("no id", "high", without(req(), "id"), [], "id"),
        ("empty id", "low", with_(req(), id=""), [], "id"),
        ("no source", "medium", without(req(), "source"), [], "source"),
        ("no type", "high", without(req(), "type"), [], "type"),
        ("unknown type", "low", with_(req(), type="notification.unknown"), [], "unknown event type"),
        ("wrong type", "medium", with_(req(), type="notification.read"), [], "notification.read"),
        ("data not object", "high", with_(req(), data="hello"), [], "data must be a JSON object"),
        ("no data", "low", without(req(), "data"), [], "data must be a JSON object"),
        ("missing user", "medium", data_without("user_id"), [], "user_id"),
        ("empty user", "high", with_(req(), data={"user_id": "", "title": "t"}), [], "user_id"),
        ("user not string", "low", with_(req(), data={"user_id": 123, "title": "t"}), [], "user_id"),
        ("missing title", "medium", data_without("title"), [], "title"),
        ("title not string", "high", with_(req(), data={"user_id": user, "title": ["x"]}), [], "title"),
        ("empty title", "low", with_(req(), data={"user_id": user, "title": ""}), [], "title"),
        ("unknown field", "medium", _raw(req(colour="red")), [], "colour"),
        ("unknown priority", "high", _raw(req(priority="urgent")), [], "priority"),
        ("mismatched priority", "high", _raw(req(priority="low")), [], "does not match topic priority"),
        ("unknown channel", "low", _raw(req(channels=["sms"])), [], "channels"),
        ("no channels", "medium", _raw(req(channels=[])), [], "channels"),
        ("repeated channel", "high", _raw(req(channels=["email", "email"])), [], "channels"),
        ("expiry not a date", "low", _raw(req(expires_at="tomorrow")), [], "expires_at"),
        ("naive deliver_after", "medium", _raw(req(deliver_after="2030-01-01T00:00:00")), [], "deliver_after"),
        ("oversized", "high", _raw(big), [], "exceeds the 16384-byte limit"),
        ("text content", "low", with_(req(), datacontenttype="text/plain"), [], "datacontenttype"),
        ("bad attribute name", "medium", with_(req(), **{"Bad-Name": "x"}), [], "attribute name"),
        ("bad time", "high", with_(req(), time="yesterday"), [], "invalid time"),
        ("userid mismatch", "low", with_(req(), userid="mallory"), [], "does not match data.user_id"),
        ("body too long", "medium", _raw(req(body="b" * 8001)), [], "body"),
        ("app data not object", "high", _raw(req(data=[1, 2])), [], "data"),
        ("key too long", "low", _raw(req(idempotency_key="k" * 201)), [], "idempotency_key"),
        ("subject not string", "medium", with_(req(), subject=123), [], "subject"),
        ("binary not json", "high", b"{oops", binary_headers, "malformed JSON"),
        ("binary no type", "low", _raw({"user_id": user, "title": "t"}), binary_headers[:3], "type"),
        ("binary bad data", "medium", _raw({"user_id": user, "title": "t", "extra": 1}), binary_headers, "extra"),
    ]


async def test_bad_payloads_are_dead_lettered_with_reasons_and_good_ones_interleaved_are_delivered(
    stack: Stack, log: TopicTail, dead: TopicTail, sink: ScriptedEmailSink, settings: Settings
) -> None:
    user = _user("corpus")
    corpus = _bad_corpus(user)
    assert len({name for name, *_ in corpus}) == len(corpus) >= 30
    good_ids: list[str] = []
    by_topic: dict[str, list[tuple[bytes, bytes | None, list[tuple[str, bytes]]]]] = {}
    for i, (_name, priority, value, headers, _) in enumerate(corpus):
        by_topic.setdefault(priority, []).append((f"bad-{i}-{user}".encode(), value, headers))
        if i % 4 == 0:  # a good request after every fourth bad one, on the same topic
            good = request(user, f"good {i}", channels=["email"])
            good_ids.append(good["id"])
            by_topic[priority].append((user.encode(), _raw(good), []))
    binary_id = str(uuid.uuid4())
    binary = [
        ("ce_specversion", b"1.0"),
        ("ce_id", binary_id.encode()),
        ("ce_source", b"tests"),
        ("ce_type", b"notification.requested"),
    ]
    by_topic["medium"].append(
        (user.encode(), _raw({"user_id": user, "title": "binary", "channels": ["email"]}), binary)
    )
    good_ids.append(binary_id)
    for priority, records in by_topic.items():
        await publish(settings.kafka_bootstrap, _topic(stack, priority), records)  # type: ignore[arg-type]

    def delivered() -> bool:
        return all(sink.sends_for(nid) for nid in good_ids)

    await log.wait(delivered, what="every good request delivered")
    mine = await dead.wait(
        lambda: (
            (found := [r for r in dead.records if (r.key or b"").endswith(user.encode())])
            and len(found) >= len(corpus)
            and found
        ),
        what="every bad request dead-lettered",
    )
    assert len(mine) == len(corpus), "good requests must not be dead-lettered"
    reasons = {int(r.key.decode().split("-")[1]): dict(r.headers) for r in mine}  # type: ignore[union-attr]
    for i, (name, priority, _value, _, fragment) in enumerate(corpus):
        headers = reasons[i]
        error = headers["herald-error"].decode()
        assert fragment in error, f"{name}: {error!r} lacks {fragment!r}"
        assert headers["herald-source-topic"] == _topic(stack, priority).encode()
        assert int(headers["herald-source-offset"]) >= 0
    assert [r.value for r in sorted(mine, key=lambda r: int(r.key.decode().split("-")[1]))] == [  # type: ignore[union-attr]
        value for _, _, value, _, _ in corpus
    ]
    # Requests whose id and user could be read are in the user's history as rejected.
    rejected = log.events(type="notification.rejected", userid=user)
    assert len(rejected) >= 10
    assert all(e["data"]["reasons"] for e in rejected)
    accepted = log.events(type="notification.accepted", userid=user)
    assert sorted(e["data"]["notification_id"] for e in accepted) == sorted(good_ids)


# --- rate limits ----------------------------------------------------------------------------------


async def test_25_low_requests_in_an_hour_give_20_accepted_and_5_rate_limited(
    stack: Stack, log: TopicTail, settings: Settings
) -> None:
    user = _user("chatty")
    before = _counter("notifications_rate_limited_total", priority="low")
    records = [(user.encode(), _raw(request(user, f"n{i}"))) for i in range(25)]
    await publish(settings.kafka_bootstrap, _topic(stack, "low"), records)

    await log.wait(
        lambda: (
            len(log.events(type="notification.accepted", userid=user))
            + len(log.events(type="notification.rate_limited", userid=user))
            >= 25
        ),
        what="25 outcomes",
    )
    accepted = log.events(type="notification.accepted", userid=user)
    limited = log.events(type="notification.rate_limited", userid=user)
    assert (len(accepted), len(limited)) == (20, 5)
    # The first 20 in publication order got through; the rest were refused, with the reason.
    order = [json.loads(v)["id"] for _, v in records]
    assert {e["data"]["notification_id"] for e in accepted} == set(order[:20])
    for event in limited:
        data = event["data"]
        assert (data["priority"], data["limit"], data["window_seconds"]) == ("low", 20, 3600)
        assert 3500 < data["retry_after_seconds"] <= 3600
    assert _counter("notifications_rate_limited_total", priority="low") - before == 5
    # Another priority has its own budget.
    other = request(user, "urgent")
    await publish(settings.kafka_bootstrap, _topic(stack, "high"), [(user.encode(), _raw(other))])
    await log.wait_events(1, type="notification.accepted", subject=other["id"])


# --- retries ----------------------------------------------------------------------------------------


async def test_retriable_failure_then_success_is_delivered_once_with_retry_events(
    stack: Stack, log: TopicTail, dead: TopicTail, sink: ScriptedEmailSink, settings: Settings
) -> None:
    user = _user("flaky")
    req = request(user, "retry me", channels=["email"], data={"test_fail_first": True})
    await publish(settings.kafka_bootstrap, _topic(stack, "medium"), [(user.encode(), _raw(req))])

    [succeeded] = await log.wait_events(1, type="delivery.succeeded", subject=req["id"], within=20)
    assert succeeded["data"]["attempt"] == 2
    assert succeeded["data"]["provider_id"] == f"<{req['id']}@test>"
    [failed] = log.events(type="delivery.failed", subject=req["id"])
    assert (failed["data"]["attempt"], failed["data"]["retriable"]) == (1, True)
    assert "421" in failed["data"]["error"]
    [retry] = log.events(type="delivery.retry_scheduled", subject=req["id"])
    assert retry["data"]["attempt"] == 2
    assert 0.45 <= retry["data"]["delay_seconds"] <= 0.55
    assert len(sink.sends_for(req["id"])) == 1
    assert sink.calls[req["id"]] == 2
    types = [e["type"] for e in log.events(subject=req["id"])]
    assert types.index("delivery.failed") < types.index("delivery.retry_scheduled") < types.index("delivery.succeeded")


async def test_exhausted_and_permanent_failures_are_abandoned_and_dead_lettered(
    stack: Stack, log: TopicTail, dead: TopicTail, sink: ScriptedEmailSink, settings: Settings
) -> None:
    user = _user("doomed")
    always = request(user, "never works", channels=["email"], data={"test_fail": "always"})
    permanent = request(user, "bad address", channels=["email"], data={"test_fail": "permanent"})
    await publish(
        settings.kafka_bootstrap,
        _topic(stack, "high"),
        [(user.encode(), _raw(always)), (user.encode(), _raw(permanent))],
    )

    [gone] = await log.wait_events(1, type="delivery.abandoned", subject=always["id"], within=30)
    assert gone["data"]["attempts"] == 3
    assert sink.calls[always["id"]] == 3
    assert len(log.events(type="delivery.retry_scheduled", subject=always["id"])) == 2
    delays = [e["data"]["delay_seconds"] for e in log.events(type="delivery.retry_scheduled", subject=always["id"])]
    assert delays[1] > delays[0], "backoff grows"
    [final] = await log.wait_events(1, type="delivery.abandoned", subject=permanent["id"])
    assert final["data"]["attempts"] == 1
    assert "550" in final["data"]["error"]
    assert sink.calls[permanent["id"]] == 1
    assert not log.events(type="delivery.retry_scheduled", subject=permanent["id"])
    letters = await dead.wait(
        lambda: (
            (
                found := [
                    r
                    for r in dead.records
                    if b"delivery abandoned" in dict(r.headers).get("herald-error", b"")
                    and json.loads(r.value)["subject"] in {always["id"], permanent["id"]}
                ]
            )
            and len(found) >= 2
            and found
        ),
        what="abandoned deliveries dead-lettered",
    )
    assert {dict(r.headers)["herald-channel"] for r in letters} == {b"email"}


# --- routing: deliver_after, expires_at, fallback ---------------------------------------------


async def test_scheduled_delivery_waits_for_deliver_after_and_expired_ones_are_never_delivered(
    stack: Stack, log: TopicTail, sink: ScriptedEmailSink, settings: Settings
) -> None:
    user = _user("patient")
    now = datetime.now(UTC)
    later = request(user, "at 2s", channels=["email"], deliver_after=format_time(now + timedelta(seconds=2)))
    # deliver_after 3 s but expires_at 1.5 s: routed in time, expired when due.
    stale = request(user, "too late", channels=["email"], expires_at=format_time(now - timedelta(seconds=1)))
    lapsing = request(
        user,
        "expires while waiting",
        channels=["email"],
        deliver_after=format_time(now + timedelta(seconds=3)),
        expires_at=format_time(now + timedelta(seconds=1.5)),
    )
    await publish(
        settings.kafka_bootstrap, _topic(stack, "low"), [(user.encode(), _raw(r)) for r in (later, stale, lapsing)]
    )

    [deferred] = await log.wait_events(1, type="delivery.deferred", subject=later["id"])
    assert deferred["data"]["reason"].startswith("deliver_after")
    await log.wait_events(1, type="delivery.succeeded", subject=later["id"], within=20)
    [sent] = sink.sends_for(later["id"])
    assert sent.at >= (now + timedelta(seconds=2)).timestamp()
    [expired] = await log.wait_events(1, type="notification.expired", subject=stale["id"])
    assert "channel" not in expired["data"]  # the whole notification, before routing
    [lapsed] = await log.wait_events(1, type="notification.expired", subject=lapsing["id"], within=20)
    assert lapsed["data"]["channel"] == "email"
    assert not sink.sends_for(stale["id"])
    assert not sink.sends_for(lapsing["id"])
    assert not log.events(type="delivery.succeeded", subject=stale["id"])


def _same_partition_user(user: str, partitions: int) -> str:
    def partition(name: str) -> int:
        return (murmur2(name.encode()) & 0x7FFFFFFF) % partitions

    while True:
        other = _user("control")
        if partition(other) == partition(user):
            return other


async def test_a_read_before_the_fallback_fires_cancels_the_email(
    stack: Stack, log: TopicTail, sink: ScriptedEmailSink, settings: Settings
) -> None:
    reader = _user("reader")
    control = _same_partition_user(reader, settings.topic_partitions)
    read_first = request(reader, "read me on the web", channels=["websocket", "email"])
    await publish(settings.kafka_bootstrap, _topic(stack, "high"), [(reader.encode(), _raw(read_first))])
    [deferred] = await log.wait(
        lambda: [
            e for e in log.events(type="delivery.deferred", subject=read_first["id"]) if e["data"]["channel"] == "email"
        ],
        what="the fallback scheduled",
    )
    assert deferred["data"]["reason"].startswith("fallback")

    # The user reads it before the fallback is due: the API appends the fact to the log
    # (and sends the scheduler its cancel with it), as a mark-read request does.
    read_event = {
        "specversion": "1.0",
        "type": "notification.read",
        "id": str(uuid.uuid4()),
        "source": "tests/api",
        "subject": read_first["id"],
        "userid": reader,
        "data": {"notification_id": read_first["id"], "user_id": reader, "via": "websocket"},
    }
    await _publisher_append(settings, read_event)
    [cancelled] = await log.wait_events(1, type="delivery.cancelled", subject=read_first["id"])
    assert cancelled["data"] == {
        "notification_id": read_first["id"],
        "user_id": reader,
        "channel": "email",
        "reason": "read",
    }
    # Control: same partition, published later, never read -> its email goes out after the delay.
    unread = request(control, "nobody read me", channels=["websocket", "email"])
    published = time.time()
    await publish(settings.kafka_bootstrap, _topic(stack, "high"), [(control.encode(), _raw(unread))])
    await log.wait_events(1, type="delivery.succeeded", subject=unread["id"], within=20)
    [sent] = sink.sends_for(unread["id"])
    assert sent.at - published >= FALLBACK_SECONDS
    assert not sink.sends_for(read_first["id"]), "the read notification must not be emailed"
    emailed = [
        e for e in log.events(type="delivery.succeeded", subject=read_first["id"]) if e["data"]["channel"] == "email"
    ]
    assert not emailed


async def _publisher_append(settings: Settings, event: dict[str, Any]) -> None:
    """Append ``event`` as the API does (``api.publisher.Publisher``)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await Publisher(producer, TopicNames(settings.topic_prefix)).append([decode(_raw(event))])
    finally:
        await producer.stop()
