"""The email channel through the whole pipeline: Kafka in, a real SMTP server (aiosmtpd) out.

One worker serves the module; the SMTP server is Herald's capture server, told to
answer 451 or 550 for the next messages where a test needs a failure.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from engine.settings import Settings
from herald.smtp_capture import SmtpCapture
from herald.stack import Stack, run_stack
from schemas.envelope import Envelope
from schemas.events import ContactUpdated
from schemas.ids import uuid7
from streams.device_registry import DeviceRegistry
from streams.email_sink import EmailSink
from streams.metrics import DUPLICATE_SENDS_SUPPRESSED
from tests.integration.stream_core_support import core_settings
from tests.support.event_log import append
from tests.support.kafka import publish, publish_json, request
from tests.support.log_reader import TopicTail
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def smtp() -> AsyncIterator[SmtpCapture]:
    async with SmtpCapture() as server:
        yield server


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str, redis_url: str, smtp: SmtpCapture) -> Settings:
    return core_settings(
        kafka_bootstrap,
        redis_url,
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        smtp_tls="none",  # the capture server is on loopback and has no TLS
        smtp_from="Herald Tests <noreply@herald.test>",
        retry_base_delay_seconds=0.3,
        retry_max_attempts=4,
        retry_jitter=0.1,
        scheduler_tick_seconds=0.2,
    )


@pytest.fixture(scope="module")
def registry() -> DeviceRegistry:
    return DeviceRegistry()


@pytest.fixture(scope="module")
async def stack(settings: Settings, registry: DeviceRegistry) -> AsyncIterator[Stack]:
    sink = EmailSink(settings, registry)
    async with run_stack(settings, worker=True, projector=False, api=False, sinks=[sink]) as running:
        yield running


@pytest.fixture(scope="module")
async def log(stack: Stack, settings: Settings) -> AsyncIterator[TopicTail]:
    assert stack.topics is not None
    tail = TopicTail(settings.kafka_bootstrap, stack.topics.names.events)
    await tail.start()
    yield tail
    await tail.stop()


def _user(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


async def _send(stack: Stack, settings: Settings, user: str, title: str, **data: object) -> str:
    assert stack.topics is not None
    body = request(user, title, **data)
    await publish_json(settings.kafka_bootstrap, stack.topics.names.request("high"), user, body)
    return str(body["id"])


async def test_an_email_arrives_with_subject_bodies_and_headers_and_its_message_id_is_recorded(
    stack: Stack, settings: Settings, smtp: SmtpCapture, log: TopicTail
) -> None:
    user = _user("erin")
    address = f"{user}@example.test"
    nid = await _send(
        stack,
        settings,
        user,
        "Your order <42> shipped",
        body="It left the warehouse.\nTrack it online.",
        channels=["email"],
        email=address,
        category="orders",
    )
    async with asyncio.timeout(30):
        [mail] = await smtp.wait_for(1, to=address)
    assert mail.subject == "Your order <42> shipped"
    assert mail.mail_from == "noreply@herald.test"
    assert mail.message["From"] == "Herald Tests <noreply@herald.test>"
    assert mail.message["To"] == address
    assert mail.message["X-Herald-Notification-Id"] == nid
    assert mail.message["X-Herald-Priority"] == "high"
    assert mail.message["X-Herald-Category"] == "orders"
    assert "It left the warehouse.\nTrack it online." in mail.body("plain")
    html = mail.body("html")
    assert "<h1" in html
    assert "Your order &lt;42&gt; shipped" in html  # producer text is escaped
    assert "It left the warehouse.<br>" in html
    [ok] = await log.wait_events(1, type="delivery.succeeded", subject=nid)
    assert ok["data"]["channel"] == "email"
    assert ok["data"]["target"] == address
    assert ok["data"]["provider_id"] == mail.message["Message-ID"]


async def test_without_an_address_in_the_request_the_contact_address_is_used(
    stack: Stack, settings: Settings, smtp: SmtpCapture, log: TopicTail, registry: DeviceRegistry
) -> None:
    user = _user("fay")
    contact = f"{user}.home@example.test"
    env = Envelope(
        id=uuid7(),
        source="tests",
        time=datetime.now(UTC),
        data=ContactUpdated(user_id=user, email=contact),
        subject=None,
        userid=user,
    )
    assert stack.topics is not None
    await append(settings.kafka_bootstrap, stack.topics.names.events, [env])
    await eventually(lambda: _async(registry.contact(user)), what="the contact in the registry")
    nid = await _send(stack, settings, user, "Welcome", channels=["email"])
    async with asyncio.timeout(30):
        [mail] = await smtp.wait_for(1, to=contact)
    assert mail.message["X-Herald-Notification-Id"] == nid


async def test_451_twice_then_250_is_delivered_once_after_two_retries(
    stack: Stack, settings: Settings, smtp: SmtpCapture, log: TopicTail
) -> None:
    user = _user("gus")
    address = f"{user}@example.test"
    refused_before = len(smtp.refused)
    smtp.fail_next("451 4.3.0 Mailbox busy, try again later", count=2)
    nid = await _send(stack, settings, user, "Retry me", channels=["email"], email=address)
    [ok] = await log.wait_events(1, type="delivery.succeeded", subject=nid)
    assert ok["data"]["attempt"] == 3
    assert len(smtp.to(address)) == 1
    assert smtp.refused[refused_before:] == ["451 4.3.0 Mailbox busy, try again later"] * 2
    failed = log.events(type="delivery.failed", subject=nid)
    retries = log.events(type="delivery.retry_scheduled", subject=nid)
    assert [(f["data"]["attempt"], f["data"]["retriable"]) for f in failed] == [(1, True), (2, True)]
    assert all("451" in f["data"]["error"] for f in failed)
    assert [r["data"]["attempt"] for r in retries] == [2, 3]
    assert not log.events(type="delivery.abandoned", subject=nid)


async def test_550_fails_at_once_without_retry(
    stack: Stack, settings: Settings, smtp: SmtpCapture, log: TopicTail
) -> None:
    user = _user("hal")
    address = f"{user}@example.test"
    smtp.fail_next("550 5.1.1 No such user here", stage="rcpt")
    nid = await _send(stack, settings, user, "Nobody home", channels=["email"], email=address)
    [abandoned] = await log.wait_events(1, type="delivery.abandoned", subject=nid)
    assert abandoned["data"]["attempts"] == 1
    assert "550 5.1.1 No such user here" in abandoned["data"]["error"]
    [failed] = log.events(type="delivery.failed", subject=nid)
    assert failed["data"]["retriable"] is False
    assert not log.events(type="delivery.retry_scheduled", subject=nid)
    assert not log.events(type="delivery.succeeded", subject=nid)
    assert smtp.to(address) == []


async def _async(value: object) -> object:
    return value


async def test_a_work_record_processed_twice_sends_one_email(
    stack: Stack, settings: Settings, smtp: SmtpCapture, log: TopicTail
) -> None:
    """The router may hand the same notification over again (re-run after a crash): one email."""
    user = _user("gus")
    address = f"{user}@example.test"
    nid = await _send(stack, settings, user, "Only once", channels=["email"], email=address)
    async with asyncio.timeout(30):
        await smtp.wait_for(1, to=address)
    [accepted] = await log.wait_events(1, type="notification.accepted", subject=nid)
    before = DUPLICATE_SENDS_SUPPRESSED.labels("email")._value.get()
    assert stack.topics is not None
    await publish(
        settings.kafka_bootstrap,
        stack.topics.names.delivery("email"),
        [(user.encode(), json.dumps(accepted).encode())],
    )

    async def suppressed() -> bool:
        return DUPLICATE_SENDS_SUPPRESSED.labels("email")._value.get() > before

    await eventually(suppressed, what="the repeated work record to be processed")
    assert len(smtp.to(address)) == 1
    assert len(log.events(type="delivery.succeeded", subject=nid)) == 1
