"""Issue 12's product gaps, through the whole stack: REST in, Kafka, the worker's routing and
sinks, the real SMTP capture server and APNs emulator out, the projector on Postgres.

1. A contact's ``email_fallback_minutes`` is the user's own fallback delay.
2. A contact's ``channels`` holds for every channel, not only email.
3. ``POST /api/notifications`` and ``/bulk`` accept every field of the request schema.
4. ``?status=sent``, the per-device ``sending`` status and ``Device.last_notification_at``.

One stack serves the module (global email fallback: one hour); every test has its own
users and device tokens.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from api.auth import SCOPE_WRITE
from engine.settings import Settings
from herald.apns_emulator import ApnsEmulator
from herald.smtp_capture import SmtpCapture
from herald.stack import Stack, run_stack
from schemas.codec import format_time, parse_time, schema
from streams.apns_sink import ApnsSink
from streams.delivery_attempt import Sink
from streams.device_registry import DeviceRegistry
from streams.email_sink import EmailSink
from tests.support.api import Api, Reply, isolated_settings, own_database, unique
from tests.support.apns import apns_settings
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

GLOBAL_FALLBACK_SECONDS = 3600.0


@pytest.fixture(scope="module")
async def smtp() -> AsyncIterator[SmtpCapture]:
    async with SmtpCapture() as server:
        yield server


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with own_database("herald_gaps") as url:
        yield url


@pytest.fixture(scope="module")
def settings(
    kafka_bootstrap: str,
    redis_url: str,
    database: str,
    smtp: SmtpCapture,
    emulator: ApnsEmulator,
    signing_key: tuple[str, str],
) -> Settings:
    return isolated_settings(
        kafka_bootstrap,
        database,
        redis_url,
        **apns_settings(emulator, signing_key[0]),
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        smtp_tls="none",  # the capture server is on loopback and has no TLS
        email_fallback_seconds=GLOBAL_FALLBACK_SECONDS,
        retry_base_delay_seconds=0.3,
        retry_max_attempts=4,
        retry_jitter=0.1,
        scheduler_tick_seconds=0.2,
        write_burst=1000,
    )


@pytest.fixture(scope="module")
def registry() -> DeviceRegistry:
    return DeviceRegistry()


@pytest.fixture(scope="module")
async def stack(settings: Settings, registry: DeviceRegistry) -> AsyncIterator[Stack]:
    sinks: list[Sink] = [EmailSink(settings, registry), ApnsSink(settings, registry)]
    async with run_stack(settings, sinks=sinks) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _base(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.http_port}"


def _service(http: aiohttp.ClientSession, stack: Stack, settings: Settings) -> Api:
    return Api.for_user(http, _base(stack), settings, "billing-service", SCOPE_WRITE)


def _user(http: aiohttp.ClientSession, stack: Stack, settings: Settings, name: str) -> tuple[str, Api]:
    user = unique(name)
    return user, Api.for_user(http, _base(stack), settings, user)


async def _device(api: Api, registry: DeviceRegistry, user: str) -> str:
    """Register a fresh APNs token through the API; wait until the worker's registry has it."""
    token = secrets.token_hex(32)
    reply = await api.post("/api/devices", json={"device_token": token, "platform": "ios"})
    assert reply.status in (201, 202), reply.body

    async def known() -> bool:
        return token in registry.active_tokens(user)

    await eventually(known, what="the device in the worker's registry")
    return token


async def _contact(service: Api, registry: DeviceRegistry, user: str, **contact: Any) -> None:
    """Set the user's contact through the API; wait until the worker has folded it."""
    reply = await service.put(f"/api/users/{user}/contact", json=contact)
    assert reply.status in (200, 202), reply.body

    async def folded() -> bool:
        known = registry.contact(user)
        return known is not None and known["channels"] == contact.get("channels", known["channels"])

    await eventually(folded, what="the contact in the worker's table")


async def _settled(api: Api, nid: str, probe: Any, what: str, timeout: float = 30.0) -> dict[str, Any]:
    """The notification's detail once ``probe(detail)`` holds."""

    seen: list[Any] = [None]

    async def check() -> dict[str, Any] | None:
        reply = await api.get(f"/api/notifications/{nid}")
        seen[0] = reply.body
        return reply.body if reply.status == 200 and probe(reply.body) else None

    try:
        return await eventually(check, timeout=timeout, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last answer: {seen[0]!r}") from None


def _created(reply: Reply) -> str:
    assert reply.status == 202, reply.body
    return str(reply.body["id"])


# -- 3. every field of the request schema over REST -----------------------------------------

SAMPLES: dict[str, Any] = {
    "user_id": None,  # filled in per test: the recipient
    "title": "Invoice 42 is ready",
    "body": "Total 12.50 EUR",
    "priority": "high",
    "channels": ["apns", "email"],
    "category": "billing",
    "data": {"invoice": 42},
    "idempotency_key": None,  # filled in per test (the header wins; the body may carry it too)
    "collapse_key": "invoice-42",
    "expires_at": None,  # filled in per test: an hour from now
    "deliver_after": None,  # filled in per test: now (due at once)
    "device_token": None,  # filled in per test: the recipient's device
    "email": "Accounts@Example.com",
    "badge": 7,
    "sound": "chime.caf",
    "push_type": "alert",
}
"""A valid value for every property of the request schema."""


async def test_post_accepts_every_request_schema_field_and_the_sinks_use_them(
    stack: Stack,
    settings: Settings,
    registry: DeviceRegistry,
    http: aiohttp.ClientSession,
    emulator: ApnsEmulator,
    smtp: SmtpCapture,
) -> None:
    # A field added to the schema must get a sample here, and so is POSTed below: REST must take it.
    assert set(SAMPLES) == set(schema("notification.requested")["properties"])
    user, me = _user(http, stack, settings, "gwen")
    token = await _device(me, registry, user)
    now = datetime.now(UTC)
    body = {
        **SAMPLES,
        "user_id": user,
        "idempotency_key": f"invoice-{user}",
        "expires_at": format_time(now + timedelta(hours=1)),
        "deliver_after": format_time(now),
        "device_token": token.upper(),
    }
    nid = _created(await _service(http, stack, settings).post("/api/notifications", json=body))
    async with asyncio.timeout(30):
        [push] = await emulator.wait_for(1, token=token)
        [mail] = await smtp.wait_for(1, to="accounts@example.com")
    assert push.payload is not None
    aps = push.payload["aps"]
    assert (aps["badge"], aps["sound"], aps["category"], aps["thread-id"]) == (7, "chime.caf", "billing", "invoice-42")
    assert aps["alert"] == {"title": "Invoice 42 is ready", "body": "Total 12.50 EUR"}
    assert push.headers["apns-push-type"] == "alert"
    assert mail.subject == "Invoice 42 is ready"
    # Delivered once the first channel succeeded; each target is "sent" once its own success is projected.
    detail = await _settled(
        me,
        nid,
        lambda d: d["status"] == "delivered" and [t["status"] for t in d["targets"]] == ["sent", "sent"],
        "both sent",
    )
    assert {(t["channel"], t["status"]) for t in detail["targets"]} == {("apns", "sent"), ("email", "sent")}


async def test_background_push_type_and_badge_in_a_bulk_send(
    stack: Stack, settings: Settings, registry: DeviceRegistry, http: aiohttp.ClientSession, emulator: ApnsEmulator
) -> None:
    user, me = _user(http, stack, settings, "hal")
    token = await _device(me, registry, user)
    reply = await _service(http, stack, settings).post(
        "/api/notifications/bulk",
        json={"device_tokens": [token], "title": "sync", "push_type": "background", "badge": 0, "sound": "x.caf"},
    )
    assert reply.status == 202, reply.body
    assert reply.body["requested"] == 1
    async with asyncio.timeout(30):
        [push] = await emulator.wait_for(1, token=token)
    assert push.payload is not None
    assert push.payload["aps"] == {"content-available": 1, "badge": 0}
    assert push.headers["apns-push-type"] == "background"
    assert push.headers["apns-priority"] == "5"


async def test_a_push_to_a_device_token_alone_reaches_that_device_for_its_owner(
    stack: Stack, settings: Settings, registry: DeviceRegistry, http: aiohttp.ClientSession, emulator: ApnsEmulator
) -> None:
    # The push service's single send: a token and the content, no user_id and no channels.
    user, me = _user(http, stack, settings, "ivy")
    token = await _device(me, registry, user)
    service = _service(http, stack, settings)
    nid = _created(
        await service.post(
            "/api/notifications", json={"device_token": token.upper(), "title": "Hello", "body": "hi", "badge": 1}
        )
    )
    async with asyncio.timeout(30):
        [push] = await emulator.wait_for(1, token=token)
    assert push.payload is not None
    assert (push.payload["aps"]["alert"], push.payload["aps"]["badge"]) == ({"title": "Hello", "body": "hi"}, 1)
    detail = await _settled(me, nid, lambda d: d["status"] == "delivered", "the push delivered")
    assert (detail["user_id"], detail["channels"]) == (user, ["apns"])
    # The owner's own token does the same with the owner's own (user) token.
    _created(await me.post("/api/notifications", json={"device_token": token, "title": "mine"}))
    async with asyncio.timeout(30):
        pushes = await emulator.wait_for(2, token=token)
    assert [p.payload["aps"]["alert"]["title"] for p in pushes if p.payload] == ["Hello", "mine"]
    # Channels named, or a token nobody holds: as before.
    assert (
        await service.post("/api/notifications", json={"device_token": token, "title": "x", "channels": []})
    ).status == 422
    unknown = await service.post("/api/notifications", json={"device_token": secrets.token_hex(32), "title": "x"})
    assert unknown.status == 422 and "not an active device" in unknown.body["detail"], unknown.body
    bad = await service.post("/api/notifications", json={"device_token": "not-hex", "title": "x"})
    assert bad.status == 422 and "device_token" in bad.body["detail"], bad.body


async def test_a_user_token_may_not_mail_an_address_of_its_choice_and_bad_values_are_422(
    stack: Stack, settings: Settings, http: aiohttp.ClientSession
) -> None:
    _, me = _user(http, stack, settings, "ivan")
    relay = await me.post("/api/notifications", json={"title": "hi", "channels": ["email"], "email": "x@example.com"})
    assert relay.status == 403
    assert relay.content_type == "application/problem+json"
    service = _service(http, stack, settings)
    for bad in (
        {"email": "a@example.com, b@example.com"},
        {"badge": -1},
        {"push_type": "voip"},
        {"sound": "s" * 101},
    ):
        reply = await service.post("/api/notifications", json={"user_id": "someone", "title": "hi", **bad})
        assert reply.status == 422, (bad, reply.body)
        assert reply.content_type == "application/problem+json"
    bulk = await me.post("/api/notifications/bulk", json={"user_ids": ["x"], "title": "hi", "email": "x@example.com"})
    assert bulk.status == 403


# -- 2. the contact's channels hold for every channel ---------------------------------------


async def test_channels_the_contact_leaves_out_are_cancelled_on_every_channel(
    stack: Stack,
    settings: Settings,
    registry: DeviceRegistry,
    http: aiohttp.ClientSession,
    emulator: ApnsEmulator,
    smtp: SmtpCapture,
) -> None:
    user, me = _user(http, stack, settings, "jo")
    token = await _device(me, registry, user)
    address = f"{user}@example.com"
    await _contact(_service(http, stack, settings), registry, user, email=address, channels=["email"])
    nid = _created(await me.post("/api/notifications", json={"title": "Only by mail", "channels": ["all"]}))
    async with asyncio.timeout(30):
        [mail] = await smtp.wait_for(1, to=address)
    assert mail.subject == "Only by mail"
    detail = await _settled(
        me, nid, lambda d: d["channel_states"].get("email") == "delivered", "email delivered, the rest settled"
    )
    assert detail["channel_states"] == {"websocket": "cancelled", "email": "delivered", "apns": "cancelled"}
    reasons = {d["channel"]: d["error"] for d in detail["deliveries"] if d["outcome"] == "cancelled"}
    assert reasons == {
        "websocket": "turned off in the user's contact preferences",
        "apns": "turned off in the user's contact preferences",
    }
    assert [r for r in emulator.received if r.token == token] == []


# -- 1. the contact's email_fallback_minutes ------------------------------------------------


async def test_the_user_s_fallback_minutes_replace_the_global_delay(
    stack: Stack, settings: Settings, registry: DeviceRegistry, http: aiohttp.ClientSession, smtp: SmtpCapture
) -> None:
    service = _service(http, stack, settings)
    later, later_api = _user(http, stack, settings, "kim")
    at_once, at_once_api = _user(http, stack, settings, "lee")
    both = ["websocket", "email"]
    await _contact(service, registry, later, email=f"{later}@example.com", channels=both, email_fallback_minutes=2)
    await _contact(service, registry, at_once, email=f"{at_once}@example.com", channels=both, email_fallback_minutes=0)
    sent_at = datetime.now(UTC)
    deferred_nid = _created(await later_api.post("/api/notifications", json={"title": "t", "channels": both}))
    direct_nid = _created(await at_once_api.post("/api/notifications", json={"title": "u", "channels": both}))

    # 0 minutes: no fallback for this user, the email goes at once (the global delay is an hour).
    async with asyncio.timeout(30):
        await smtp.wait_for(1, to=f"{at_once}@example.com")
    await _settled(at_once_api, direct_nid, lambda d: d["channel_states"]["email"] == "delivered", "email sent")

    # 2 minutes: the email waits for the user's delay, not the global hour.
    detail = await _settled(
        later_api, deferred_nid, lambda d: d["channel_states"]["email"] == "deferred", "email deferred"
    )
    [deferral] = [d for d in detail["deliveries"] if d["channel"] == "email" and d["outcome"] == "deferred"]
    due = parse_time(deferral["error"].removeprefix("fallback: email if unread at "))
    assert timedelta(minutes=2) - timedelta(seconds=5) <= due - sent_at <= timedelta(minutes=2, seconds=30)
    assert smtp.to(f"{later}@example.com") == []


# -- 4. status=sent, per-device sending, last_notification_at -------------------------------


async def test_status_sent_lists_delivered_notifications(
    stack: Stack, settings: Settings, registry: DeviceRegistry, http: aiohttp.ClientSession
) -> None:
    user, me = _user(http, stack, settings, "max")
    token = await _device(me, registry, user)
    sent = _created(await me.post("/api/notifications", json={"title": "pushed", "channels": ["apns"]}))
    await _settled(me, sent, lambda d: d["status"] == "delivered", "the push delivered")
    waiting = _created(
        await me.post(
            "/api/notifications",
            json={
                "title": "later",
                "channels": ["apns"],
                "deliver_after": format_time(datetime.now(UTC) + timedelta(hours=1)),
            },
        )
    )
    await _settled(me, waiting, lambda d: d["status"] == "pending", "the deferred one projected")
    listed = await me.get("/api/notifications", params={"status": "sent"})
    assert listed.status == 200, listed.body
    assert [n["id"] for n in listed.body["results"]] == [sent]
    assert (await me.get("/api/notifications", params={"device_token": token, "status": "sent"})).body["results"][0][
        "id"
    ] == sent


async def test_a_push_in_flight_is_sending_then_sent_and_the_device_remembers_it(
    stack: Stack, settings: Settings, registry: DeviceRegistry, http: aiohttp.ClientSession, emulator: ApnsEmulator
) -> None:
    user, me = _user(http, stack, settings, "ned")
    token = await _device(me, registry, user)
    [before] = (await me.get("/api/devices")).body["results"]
    assert before["last_notification_at"] is None
    emulator.latency = 2.5  # every answer of the emulator takes this long: attempts stay in flight
    try:
        # First attempt: under way until APNs answers.
        nid = _created(
            await me.post("/api/notifications", json={"title": "slow", "device_token": token, "channels": ["apns"]})
        )
        detail = await _settled(me, nid, lambda d: bool(d["targets"]), "the target listed")
        assert [(t["channel"], t["target"], t["status"]) for t in detail["targets"]] == [("apns", token, "sending")]
        detail = await _settled(me, nid, lambda d: d["targets"][0]["status"] == "sent", "the push sent")
        # A retry, once due, is sending too (before it is due it is queued).
        emulator.fail_next(503, count=1, token=token)
        retried = _created(
            await me.post("/api/notifications", json={"title": "again", "device_token": token, "channels": ["apns"]})
        )
        detail = await _settled(
            me,
            retried,
            lambda d: (
                any(x["outcome"] == "retry_scheduled" for x in d["deliveries"])
                and d["targets"][0]["status"] == "sending"
            ),
            "the retry under way",
        )
        assert [t["target"] for t in detail["targets"]] == [token]
        await _settled(me, retried, lambda d: d["targets"][0]["status"] == "sent", "the retry sent")
    finally:
        emulator.latency = 0.0
    succeeded = [
        parse_time(d["at"])
        for n in (nid, retried)
        for d in (await me.get(f"/api/notifications/{n}")).body["deliveries"]
        if d["outcome"] == "succeeded"
    ]

    async def remembered() -> dict[str, Any] | None:
        [device] = (await me.get("/api/devices")).body["results"]
        return device if device["last_notification_at"] is not None else None

    device = await eventually(remembered, what="last_notification_at set")
    assert parse_time(device["last_notification_at"]) == max(succeeded)
