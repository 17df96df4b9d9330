"""``herald redeliver`` after a real SMTP outage: retries run out while the server is down; once
it is back, a redelivery sends each undelivered mail exactly once, never one already delivered,
and records who asked and why."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from engine.settings import Settings
from herald.smtp_capture import SmtpCapture
from herald.stack import Stack, run_stack
from streams.device_registry import DeviceRegistry
from streams.email_sink import EmailSink
from tests.integration.audit_support import end_offsets, herald
from tests.integration.stream_core_support import core_settings
from tests.support.kafka import publish_json, request
from tests.support.log_reader import TopicTail

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpCapture]:
    async with SmtpCapture() as server:
        yield server


@pytest.fixture
def mail_settings(kafka_bootstrap: str, redis_url: str, smtp: SmtpCapture) -> Settings:
    return core_settings(
        kafka_bootstrap,
        redis_url,
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        smtp_tls="none",  # the capture server is on loopback and has no TLS
        retry_base_delay_seconds=0.3,
        retry_max_attempts=2,
        retry_jitter=0.1,
        scheduler_tick_seconds=0.2,
        delivery_timeout_seconds=2.0,
    )


@pytest.fixture
async def stack(mail_settings: Settings) -> AsyncIterator[Stack]:
    sink = EmailSink(mail_settings, DeviceRegistry())
    async with run_stack(mail_settings, worker=True, projector=False, api=False, sinks=[sink]) as running:
        yield running


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _send(settings: Settings, stack: Stack, user: str, address: str) -> str:
    assert stack.topics is not None
    body = request(user, "Your invoice", channels=["email"], email=address)
    await publish_json(settings.kafka_bootstrap, stack.topics.names.request("high"), user, body)
    return str(body["id"])


async def test_after_an_smtp_outage_each_mail_is_redelivered_exactly_once(
    stack: Stack, mail_settings: Settings, smtp: SmtpCapture
) -> None:
    assert stack.topics is not None
    tail = TopicTail(mail_settings.kafka_bootstrap, stack.topics.names.events)
    await tail.start()
    try:
        start = _now()
        user = f"max-{uuid.uuid4().hex[:6]}"
        before = await _send(mail_settings, stack, user, "before@example.test")
        await tail.wait_events(1, type="delivery.succeeded", subject=before)

        await smtp.stop()  # the outage
        lost = [await _send(mail_settings, stack, user, f"lost{i}@example.test") for i in range(2)]
        for nid in lost:
            await tail.wait_events(1, within=60, type="delivery.abandoned", subject=nid)
        end = _now()
        await smtp.start()  # back, same port

        args = ("redeliver", "--from", start, "--to", end, "--channel", "email")
        dry = await herald(mail_settings, *args, "--dry-run")
        assert dry.status == 0, dry.stderr
        assert "would requeue 2 deliveries of 2 notifications" in dry.stdout
        assert before not in dry.stdout
        unchanged = await end_offsets(mail_settings, list(stack.topics.names.all))
        assert "--reason is required" in (await herald(mail_settings, *args)).stderr

        done = await herald(mail_settings, *args, "--reason", "SMTP outage 09:00-09:05", "--operator", "ops")
        assert done.status == 0, done.stderr
        assert "requeued 2 deliveries of 2 notifications" in done.stdout
        for nid, address in zip(lost, ("lost0@example.test", "lost1@example.test"), strict=True):
            await tail.wait_events(1, within=60, type="delivery.succeeded", subject=nid)
            async with asyncio.timeout(30):
                [mail] = await smtp.wait_for(1, to=address)
            assert mail.message["X-Herald-Notification-Id"] == nid
            [requeued] = tail.events(type="delivery.requeued", subject=nid)
            assert requeued["data"] == {
                "notification_id": nid,
                "user_id": user,
                "channel": "email",
                "target": address,
                "operator": "ops",
                "reason": "SMTP outage 09:00-09:05",
                "previous_status": "abandoned",
            }

        again = await herald(mail_settings, *args, "--reason", "again", "--operator", "ops")
        assert again.status == 0 and "requeued 0 deliveries" in again.stdout
        assert [len(smtp.to(f"lost{i}@example.test")) for i in range(2)] == [1, 1]
        assert len(smtp.to("before@example.test")) == 1  # delivered before the outage: never again
        assert unchanged != await end_offsets(mail_settings, list(stack.topics.names.all))
    finally:
        await tail.stop()


async def test_bad_input_fails_in_one_line(mail_settings: Settings) -> None:
    bad = await herald(mail_settings, "redeliver", "--from", "x", "--to", "y", "--dry-run")
    assert bad.status == 2 and "neither an RFC 3339 time" in bad.stderr
    status = await herald(mail_settings, "redeliver", "--from", "0:0", "--to", "0:5", "--status", "lost", "--dry-run")
    assert status.status == 2 and "--status: lost" in status.stderr
