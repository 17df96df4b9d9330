"""The webhook channel through the whole pipeline: Kafka in, a real aiohttp receiver out.

The receiver checks every POST the way a Standard Webhooks receiver does, written here
from the specification (not with Herald's own helper): HMAC-SHA256 over
``id.timestamp.body`` with the shared secret, base64, ``v1,`` prefix, and a timestamp
within 5 minutes; anything else gets 401. Per URL path it can be told to answer 503 or
404, or to be slow, for the next requests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web

from engine.retry import DeliveryError
from engine.settings import Settings
from herald.dev_channels import dev_channels
from herald.stack import Stack, run_stack
from schemas.envelope import Envelope
from schemas.events import ContactUpdated, NotificationAccepted
from schemas.ids import uuid7
from streams.channels import configured_sinks
from streams.device_registry import DeviceRegistry
from streams.webhook_sink import WebhookSink
from tests.integration.stream_core_support import core_settings
from tests.support.event_log import append
from tests.support.kafka import publish_json, request
from tests.support.log_reader import TopicTail
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

SECRET_BYTES = b"herald-webhook-test-secret-0123456789"
SECRET = "whsec_" + base64.b64encode(SECRET_BYTES).decode()
TOLERANCE = 300


@dataclass
class Received:
    """One POST the receiver accepted."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float


@dataclass
class Receiver:
    """A Standard Webhooks receiver on 127.0.0.1 with scripted failures."""

    accepted: list[Received] = field(default_factory=list)
    refused: list[tuple[str, int, str]] = field(default_factory=list)
    """(path, status, why) of every POST not accepted."""
    script: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    """path -> what to do with the next requests: ``503``, ``404``, ``slow``."""
    raw: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    def verify(self, headers: dict[str, str], body: bytes) -> str | None:
        msg_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
        if not msg_id or not stamp.isdigit():
            return "no id or timestamp"
        if abs(time.time() - int(stamp)) > TOLERANCE:
            return "stale timestamp"
        mac = hmac.new(SECRET_BYTES, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
        expected = "v1," + base64.b64encode(mac).decode()
        if not any(hmac.compare_digest(expected, s) for s in headers.get("webhook-signature", "").split()):
            return "bad signature"
        return None

    async def handle(self, req: web.Request) -> web.Response:
        body = await req.read()
        headers = {k.lower(): v for k, v in req.headers.items()}
        self.raw.append((headers, body))
        why = self.verify(headers, body)
        if why is not None:
            self.refused.append((req.path, 401, why))
            return web.Response(status=401, text=why)
        todo = self.script[req.path].pop(0) if self.script[req.path] else "ok"
        if todo == "slow":
            await asyncio.sleep(3)
        elif todo in ("503", "404"):
            self.refused.append((req.path, int(todo), "scripted"))
            return web.Response(status=int(todo), text=f"scripted {todo}")
        self.accepted.append(Received(req.path, headers, json.loads(body), time.time()))
        return web.Response(status=204)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.accepted if r.path == path]


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.url = f"http://127.0.0.1:{port}"
    yield rec
    await runner.cleanup()


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str, redis_url: str) -> Settings:
    return core_settings(
        kafka_bootstrap,
        redis_url,
        webhook_secret=SECRET,
        webhook_allow_loopback_http=True,  # the receiver is plain http on loopback
        webhook_timeout_seconds=1.0,
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
    sink = WebhookSink(settings, registry)
    async with run_stack(settings, worker=True, projector=False, api=False, sinks=[sink]) as running:
        yield running


@pytest.fixture(scope="module")
async def log(stack: Stack, settings: Settings) -> AsyncIterator[TopicTail]:
    assert stack.topics is not None
    tail = TopicTail(settings.kafka_bootstrap, stack.topics.names.events)
    await tail.start()
    yield tail
    await tail.stop()


async def _user_with_webhook(
    stack: Stack, settings: Settings, registry: DeviceRegistry, url: str | None, channels: tuple[str, ...]
) -> str:
    user = f"wh-{uuid.uuid4().hex[:8]}"
    env = Envelope(
        id=uuid7(),
        source="tests",
        time=datetime.now(UTC),
        data=ContactUpdated(user_id=user, channels=channels, webhook_url=url),
        subject=None,
        userid=user,
    )
    assert stack.topics is not None
    await append(settings.kafka_bootstrap, stack.topics.names.events, [env])

    async def known() -> bool:
        contact = registry.contact(user)
        return contact is not None and contact.get("webhook_url") == url

    await eventually(known, what="the contact in the registry")
    return user


async def _send(stack: Stack, settings: Settings, user: str, title: str, **data: object) -> str:
    assert stack.topics is not None
    body = request(user, title, **data)
    await publish_json(settings.kafka_bootstrap, stack.topics.names.request("high"), user, body)
    return str(body["id"])


async def test_a_notification_is_posted_signed_to_the_contact_url_and_its_id_recorded(
    stack: Stack, settings: Settings, registry: DeviceRegistry, receiver: Receiver, log: TopicTail
) -> None:
    path = f"/hooks/{uuid.uuid4().hex[:6]}"
    user = await _user_with_webhook(stack, settings, registry, receiver.url + path, ("websocket", "webhook"))
    nid = await _send(
        stack, settings, user, "Build #42 failed", channels=["webhook"], category="ci", data={"build": 42}
    )
    [ok] = await log.wait_events(1, type="delivery.succeeded", subject=nid)
    [post] = receiver.at(path)
    assert post.body["type"] == "notification"
    data = post.body["data"]
    assert (data["notification_id"], data["user_id"], data["title"]) == (nid, user, "Build #42 failed")
    assert (data["category"], data["data"], data["priority"]) == ("ci", {"build": 42}, "high")
    assert "channels" not in data and "email" not in data  # other channels' targets stay out
    assert post.headers["content-type"] == "application/json"
    assert ok["data"]["channel"] == "webhook"
    assert ok["data"]["target"] == receiver.url + path
    assert ok["data"]["provider_id"] == post.headers["webhook-id"]


async def test_503_twice_is_retried_with_backoff_under_the_same_id_each_attempt_signed_afresh(
    stack: Stack, settings: Settings, registry: DeviceRegistry, receiver: Receiver, log: TopicTail
) -> None:
    path = f"/flaky/{uuid.uuid4().hex[:6]}"
    user = await _user_with_webhook(stack, settings, registry, receiver.url + path, ("webhook",))
    receiver.script[path] = ["503", "503"]
    nid = await _send(stack, settings, user, "Retry me", channels=["webhook"])
    [ok] = await log.wait_events(1, type="delivery.succeeded", subject=nid)
    assert ok["data"]["attempt"] == 3
    tries = [(h, b) for h, b in receiver.raw if b and json.loads(b)["data"]["notification_id"] == nid]
    assert len(tries) == 3
    assert len({h["webhook-id"] for h, _ in tries}) == 1  # the receiver can drop repeats
    stamps = [int(h["webhook-timestamp"]) for h, _ in tries]
    assert stamps == sorted(stamps)
    assert [why for p, status, why in receiver.refused if p == path] == ["scripted", "scripted"]  # no 401
    failed = log.events(type="delivery.failed", subject=nid)
    assert [(f["data"]["attempt"], f["data"]["retriable"]) for f in failed] == [(1, True), (2, True)]
    assert all("HTTP 503" in f["data"]["error"] for f in failed)
    assert [r["data"]["attempt"] for r in log.events(type="delivery.retry_scheduled", subject=nid)] == [2, 3]
    assert len(receiver.at(path)) == 1


async def test_a_timeout_is_retried_and_a_404_is_abandoned_at_once(
    stack: Stack, settings: Settings, registry: DeviceRegistry, receiver: Receiver, log: TopicTail
) -> None:
    slow = f"/slow/{uuid.uuid4().hex[:6]}"
    gone = f"/gone/{uuid.uuid4().hex[:6]}"
    slow_user = await _user_with_webhook(stack, settings, registry, receiver.url + slow, ("webhook",))
    gone_user = await _user_with_webhook(stack, settings, registry, receiver.url + gone, ("webhook",))
    receiver.script[slow] = ["slow"]
    receiver.script[gone] = ["404"]
    slow_nid = await _send(stack, settings, slow_user, "Slow", channels=["webhook"])
    gone_nid = await _send(stack, settings, gone_user, "Gone", channels=["webhook"])
    [ok] = await log.wait_events(1, type="delivery.succeeded", subject=slow_nid)
    assert ok["data"]["attempt"] == 2
    [timed_out] = log.events(type="delivery.failed", subject=slow_nid)
    assert timed_out["data"]["retriable"] is True
    assert "no answer within 1s" in timed_out["data"]["error"]
    [abandoned] = await log.wait_events(1, type="delivery.abandoned", subject=gone_nid)
    assert abandoned["data"]["attempts"] == 1
    assert "HTTP 404: scripted 404" in abandoned["data"]["error"]
    [failed] = log.events(type="delivery.failed", subject=gone_nid)
    assert failed["data"]["retriable"] is False
    assert not log.events(type="delivery.retry_scheduled", subject=gone_nid)


async def test_a_url_that_is_not_https_is_refused_without_a_request_and_no_url_cancels(
    stack: Stack, settings: Settings, registry: DeviceRegistry, receiver: Receiver, log: TopicTail
) -> None:
    port = receiver.url.rsplit(":", 1)[1]
    plain = await _user_with_webhook(stack, settings, registry, f"http://example.com:{port}/x", ("webhook",))
    none = await _user_with_webhook(stack, settings, registry, None, ("webhook",))
    before = len(receiver.raw)
    plain_nid = await _send(stack, settings, plain, "Cleartext", channels=["webhook"])
    none_nid = await _send(stack, settings, none, "Nowhere", channels=["webhook"])
    [abandoned] = await log.wait_events(1, type="delivery.abandoned", subject=plain_nid)
    assert "webhook URL refused: a webhook URL must be https://" in abandoned["data"]["error"]
    [cancelled] = await log.wait_events(1, type="delivery.cancelled", subject=none_nid)
    assert cancelled["data"]["reason"] == "no webhook target for the user"
    assert len(receiver.raw) == before


async def test_the_receiver_refuses_a_replayed_stale_or_tampered_post(
    stack: Stack, settings: Settings, registry: DeviceRegistry, receiver: Receiver, log: TopicTail
) -> None:
    path = f"/replay/{uuid.uuid4().hex[:6]}"
    user = await _user_with_webhook(stack, settings, registry, receiver.url + path, ("webhook",))
    nid = await _send(stack, settings, user, "Once", channels=["webhook"])
    await log.wait_events(1, type="delivery.succeeded", subject=nid)
    [post] = receiver.at(path)
    headers, body = next((h, b) for h, b in receiver.raw if b and json.loads(b)["data"]["notification_id"] == nid)
    assert abs(int(headers["webhook-timestamp"]) - post.at) < 5  # signed at sending time
    stale = int(headers["webhook-timestamp"]) - TOLERANCE - 60
    mac = hmac.new(SECRET_BYTES, f"{headers['webhook-id']}.{stale}.".encode() + body, hashlib.sha256).digest()
    old = {**headers, "webhook-timestamp": str(stale), "webhook-signature": "v1," + base64.b64encode(mac).decode()}
    tampered = body.replace(b"Once", b"Twice")
    async with ClientSession() as http:
        for sent_headers, sent_body in ((old, body), (headers, tampered)):
            keep = {k: v for k, v in sent_headers.items() if k.startswith("webhook-")}
            async with http.post(receiver.url + path, data=sent_body, headers=keep) as answer:
                assert answer.status == 401
    assert [why for p, _, why in receiver.refused if p == path] == ["stale timestamp", "bad signature"]
    assert len(receiver.at(path)) == 1


async def test_herald_dev_stands_in_for_every_unconfigured_channel_with_a_signature_checking_receiver(
    tmp_path: Path,
) -> None:
    async with dev_channels(Settings(), tmp_path) as dev:
        sinks = configured_sinks(dev.settings)
        assert [s.channel for s in sinks] == ["email", "apns", "webhook"]
        assert dev.webhook is not None
        assert any(dev.webhook.url in line for line in dev.lines)
        [webhook] = [s for s in sinks if isinstance(s, WebhookSink)]
        accepted = NotificationAccepted(
            "n-dev-1", "dana", "Hello from dev", "", "low", ("webhook",), "", {}, datetime.now(UTC)
        )
        try:
            msg_id = await webhook.send(accepted, dev.webhook.url + "/dana")
            [entry] = dev.webhook.received
            assert (entry["webhook_id"], entry["payload"]["data"]["title"]) == (msg_id, "Hello from dev")
            stranger = WebhookSink(dev.settings.replace(webhook_secret=SECRET), DeviceRegistry())
            with pytest.raises(DeliveryError, match="HTTP 401: no matching v1 signature") as refused:
                await stranger.send(accepted, dev.webhook.url + "/dana")
            assert refused.value.retriable is False
            await stranger.close()
        finally:
            for sink in sinks:
                await sink.close()


async def test_a_host_name_that_resolves_inside_the_network_is_refused_without_connecting() -> None:
    """A public-looking name of an internal host (here the machine's own name, which resolves
    to loopback) is not called when loopback webhooks are not allowed: no connection is
    made and the delivery is abandoned, not retried. Where loopback is allowed (``herald
    dev``, tests), the same name gets through, so the refusal is the address, not the name."""
    name = socket.gethostname()
    resolved = {a[4][0] for a in socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)}
    assert resolved and all(not ipaddress.ip_address(a).is_global for a in resolved), (
        f"this test needs the machine's name to resolve to an internal address; {name} -> {resolved}"
    )
    connections: list[str] = []

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(name)
        writer.close()

    server = await asyncio.start_server(count, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    accepted = NotificationAccepted("n-ssrf-1", "erin", "Hi", "", "low", ("webhook",), "", {}, datetime.now(UTC))
    strict = Settings().replace(webhook_secret=SECRET, webhook_allow_loopback_http=False)
    sink = WebhookSink(strict, DeviceRegistry())
    try:
        refusal = r"webhook URL refused: .* resolves only to internal addresses"
        with pytest.raises(DeliveryError, match=refusal) as refused:
            await sink.send(accepted, f"https://{name}:{port}/hook")
        assert refused.value.retriable is False
        assert connections == []
        lenient = WebhookSink(strict.replace(webhook_allow_loopback_http=True), DeviceRegistry())
        with pytest.raises(DeliveryError) as transport:  # connected; TLS to a plain socket then fails
            await lenient.send(accepted, f"https://{name}:{port}/hook")
        await lenient.close()
        assert transport.value.retriable is True
        assert connections == [name]
    finally:
        await sink.close()
        server.close()
        await server.wait_closed()
