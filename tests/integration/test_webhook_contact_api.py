"""The webhook channel from the REST API: a service sets a user's webhook URL on the contact,
a notification sent over REST is POSTed there, and its per-target status is readable.

Whole stack (API, worker with the sinks its settings configure, projector) and a real
receiver checking Standard Webhooks signatures (``test_webhook_channel.Receiver``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from api.auth import SCOPE_WRITE
from engine.settings import Settings
from herald.stack import Stack, run_stack
from tests.integration.test_webhook_channel import SECRET, Receiver
from tests.support.api import Api, isolated_settings, own_database, unique
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield rec
    await runner.cleanup()


@pytest.fixture(scope="module")
async def api_stack(kafka_bootstrap: str, redis_url: str) -> AsyncIterator[tuple[Stack, Settings]]:
    with own_database() as url:
        settings = isolated_settings(
            kafka_bootstrap, url, redis_url, webhook_secret=SECRET, webhook_allow_loopback_http=True
        )
        async with run_stack(settings) as stack:  # configured_sinks: the webhook sink, from the secret
            yield stack, settings


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def client(api_stack: tuple[Stack, Settings], http: aiohttp.ClientSession, user: str, *scopes: str) -> Api:
    stack, settings = api_stack
    return Api.for_user(http, f"http://127.0.0.1:{stack.http_port}", settings, user, *scopes)


async def test_a_webhook_url_that_is_not_https_or_too_long_is_refused_with_a_problem(
    api_stack: tuple[Stack, Settings], http: aiohttp.ClientSession
) -> None:
    user = unique("wendy")
    service = client(api_stack, http, "crm", SCOPE_WRITE)
    for url, why in (
        ("http://hooks.example.com/x", "must be https://"),
        ("ftp://127.0.0.1/x", "must be https://"),
        ("https://user:pw@hooks.example.com/x", "no credentials"),
        ("https://hooks.example.com/" + "a" * 2100, "at most 2048"),
        (42, "must be a URL or null"),
    ):
        reply = await service.put(f"/api/users/{user}/contact", json={"webhook_url": url, "channels": ["webhook"]})
        assert reply.status == 422, (url, reply.body)
        assert reply.headers["Content-Type"].startswith("application/problem+json")
        assert why in reply.body["detail"], reply.body


async def test_a_notification_is_posted_to_the_contact_url_and_its_target_status_is_sent(
    api_stack: tuple[Stack, Settings], http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    user = unique("walt")
    path = f"/walt/{user}"
    service = client(api_stack, http, "crm", SCOPE_WRITE)
    contact = {"webhook_url": receiver.url + path, "channels": ["websocket", "webhook"]}
    set_contact = await service.put(f"/api/users/{user}/contact", json=contact)
    assert set_contact.status == 200, set_contact.body
    assert set_contact.body["webhook_url"] == receiver.url + path
    mine = await client(api_stack, http, user).get(f"/api/users/{user}/contact")
    assert (mine.status, mine.body["webhook_url"]) == (200, receiver.url + path)
    walt = client(api_stack, http, user)
    sent = await walt.post("/api/notifications", json={"title": "Invoice paid", "channels": ["webhook"]})
    assert sent.status == 202, sent.body
    nid = sent.body["id"]

    async def delivered() -> dict[str, Any] | None:
        body = (await walt.get(f"/api/notifications/{nid}")).body
        return body if body["channel_states"].get("webhook") == "delivered" else None

    body = await eventually(delivered, timeout=30, what="the webhook delivery in the read model")
    [post] = receiver.at(path)
    assert post.body["data"]["notification_id"] == nid
    [target] = [t for t in body["targets"] if t["channel"] == "webhook"]
    assert (target["target"], target["status"]) == (receiver.url + path, "sent")
    [delivery] = [d for d in body["deliveries"] if d["channel"] == "webhook"]
    assert delivery["provider_id"] == post.headers["webhook-id"]
