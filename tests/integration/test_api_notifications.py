"""The REST API end to end on real parts: API -> Kafka -> worker -> projector -> Postgres -> API.

One stack serves the whole module (start-ups are costly on Tansu); every test uses its
own user ids, so tests do not see each other's data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from api.auth import SCOPE_ADMIN, SCOPE_WRITE
from engine.settings import Settings
from herald.stack import Stack, run_stack
from schemas.ids import derived_id
from tests.support.api import Api, isolated_settings, own_database, unique
from tests.support.clients import next_frame
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(300)
TOKEN_A = "a" * 64
TOKEN_B = "b" * 64


@pytest.fixture(scope="module")
async def api_stack(kafka_bootstrap: str, redis_url: str) -> AsyncIterator[tuple[Stack, Settings]]:
    with own_database() as url:
        # Producers batch as in production: this module never restarts a worker (no changelog
        # recovery) and never reads end offsets, the two places Tansu's batch limit matters.
        # Batches of one record would make the bulk of 1,500 users take minutes.
        settings = isolated_settings(kafka_bootstrap, url, redis_url, producer_max_batch_size=16384)
        async with run_stack(settings) as stack:
            yield stack, settings


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def client(api_stack: tuple[Stack, Settings], http: aiohttp.ClientSession, user: str, *scopes: str) -> Api:
    stack, settings = api_stack
    return Api.for_user(http, f"http://127.0.0.1:{stack.http_port}", settings, user, *scopes)


async def send(api: Api, **body: Any) -> dict[str, Any]:
    reply = await api.post("/api/notifications", json={"title": "hello", **body})
    assert reply.status == 202, reply.body
    assert reply.body["projected"] is True, reply.body
    return reply.body  # type: ignore[no-any-return]


async def test_send_then_read_back_with_deliveries_and_trail(api_stack, http) -> None:  # type: ignore[no-untyped-def]
    alice = client(api_stack, http, unique("alice"))
    reply = await alice.post(
        "/api/notifications",
        json={
            "title": "Deploy finished",
            "body": "v1.2.3",
            "priority": "high",
            "category": "deploy",
            "data": {"build": 42},
        },
    )
    assert reply.status == 202
    nid = reply.body["id"]
    assert reply.headers["Location"] == f"/api/notifications/{nid}"
    assert reply.body["projected"] is True
    assert reply.body["status"] in {"pending", "delivered"}

    detail = await alice.get(reply.headers["Location"])  # read your write: no waiting needed
    assert detail.status == 200
    assert (detail.body["title"], detail.body["priority"], detail.body["data"]) == (
        "Deploy finished",
        "high",
        {"build": 42},
    )

    async def deferred() -> dict[str, Any] | None:
        body = (await alice.get(f"/api/notifications/{nid}")).body
        return body if body["deliveries"] else None

    body = await eventually(deferred, what="the websocket delivery outcome")
    assert body["deliveries"][0]["channel"] == "websocket"
    assert body["deliveries"][0]["outcome"] == "deferred"  # alice is offline
    assert body["channel_states"] == {"websocket": "deferred"}
    assert body["status"] == "pending"
    trail = await alice.get(f"/api/notifications/{nid}/events")
    assert trail.status == 200
    types = [e["type"] for e in trail.body["events"]]
    assert types[:2] == ["notification.accepted", "delivery.deferred"]


async def test_idempotency_key_makes_a_retry_return_the_same_notification(api_stack, http) -> None:  # type: ignore[no-untyped-def]
    bob = client(api_stack, http, unique("bob"))
    first = await bob.post("/api/notifications", json={"title": "once"}, headers={"Idempotency-Key": "order-17"})
    again = await bob.post("/api/notifications", json={"title": "once"}, headers={"Idempotency-Key": "order-17"})
    other = await bob.post("/api/notifications", json={"title": "once"}, headers={"Idempotency-Key": "order-18"})
    assert first.status == again.status == other.status == 202
    assert first.body["id"] == again.body["id"] != other.body["id"]
    listed = await bob.get("/api/notifications")
    assert sorted(i["id"] for i in listed.body["results"]) == sorted([first.body["id"], other.body["id"]])


async def test_sending_to_someone_else_needs_the_write_scope(api_stack, http) -> None:  # type: ignore[no-untyped-def]
    carol, dave = unique("carol"), unique("dave")
    user = client(api_stack, http, carol)
    denied = await user.post("/api/notifications", json={"title": "hi", "user_id": dave})
    assert denied.status == 403
    assert denied.content_type == "application/problem+json"
    service = client(api_stack, http, "billing-service", SCOPE_WRITE)
    sent = await send(service, user_id=dave, title="Invoice ready")
    assert sent["user_id"] == dave
    listed = await client(api_stack, http, dave).get("/api/notifications")
    assert [i["title"] for i in listed.body["results"]] == ["Invoice ready"]


async def test_invalid_requests_get_problem_json(api_stack, http) -> None:  # type: ignore[no-untyped-def]
    alice = client(api_stack, http, unique("alice"))
    for body, status in (
        ({"body": "no title"}, 422),
        ({"title": "x", "priority": "urgent"}, 422),
        ({"title": "x", "channels": ["pigeon"]}, 422),
        ({"title": "x", "colour": "red"}, 422),
        ({"title": "x", "device_token": TOKEN_A}, 422),  # not one of the recipient's devices
    ):
        reply = await alice.post("/api/notifications", json=body)
        assert (reply.status, reply.content_type) == (status, "application/problem+json"), (body, reply.body)
    async with http.post(
        alice.base + "/api/notifications", data=b"{oops", headers={"Authorization": f"Bearer {alice.token}"}
    ) as resp:
        assert resp.status == 400
        assert resp.content_type == "application/problem+json"


async def test_filters(api_stack, http) -> None:  # type: ignore[no-untyped-def]
    erin = unique("erin")
    api = client(api_stack, http, erin)
    reg = await api.post("/api/devices", json={"device_token": TOKEN_A.replace("a", "c"), "name": "erin's phone"})
    assert reg.status == 201
    token = reg.body["device_token"]
    ws = await http.ws_connect(api.base.replace("http", "ws") + f"/ws/notifications?token={api.token}")
    await ws.send_json({"type": "ping"})
    await next_frame(ws, "pong")
    live = await send(api, title="while online", priority="high", category="chat")
    await next_frame(ws, "notification")
    await ws.close()
    t_mid = datetime.now(UTC)
    low = await send(api, title="low email", priority="low", channels=["email"])
    pushed = await send(api, title="to the phone", channels=["apns"], device_token=token)
    read = await send(api, title="read me", priority="high")
    assert (await api.patch(f"/api/notifications/{read['id']}/read")).status == 200

    async def ids(query: str) -> list[str]:
        reply = await api.get("/api/notifications" + query)
        assert reply.status == 200, reply.body
        return [i["id"] for i in reply.body["results"]]

    async def delivered() -> bool:
        return live["id"] in await ids("?status=delivered")

    await eventually(delivered, what="the live notification to be projected as delivered")
    assert await ids("?priority=high") == [read["id"], live["id"]]
    assert await ids("?priority=high,low") == [read["id"], low["id"], live["id"]]
    assert await ids("?channel=email") == [low["id"]]
    assert await ids("?unread=false") == [read["id"]]
    assert read["id"] not in await ids("?unread=true")
    assert await ids("?category=chat") == [live["id"]]
    assert await ids("?device_token=" + token) == [pushed["id"]]
    since = t_mid.isoformat()
    assert set(await ids(f"?since={since.replace('+', '%2B')}")) == {low["id"], pushed["id"], read["id"]}
    assert await ids(f"?until={since.replace('+', '%2B')}") == [live["id"]]
    for bad in ("?status=bogus", "?priority=urgent", "?unread=maybe", "?since=yesterday", "?limit=0", "?cursor=zzz"):
        reply = await api.get("/api/notifications" + bad)
        assert (reply.status, reply.content_type) == (400, "application/problem+json"), bad


async def test_pagination_is_stable_while_new_notifications_arrive(api_stack, http) -> None:  # type: ignore[no-untyped-def]
    api = client(api_stack, http, unique("frank"))
    first = [(await send(api, title=f"n{i}"))["id"] for i in range(7)]
    page = await api.get("/api/notifications?limit=3")
    seen = [i["id"] for i in page.body["results"]]
    newer = [(await send(api, title=f"late{i}"))["id"] for i in range(2)]  # arrive between pages
    while page.body["next"]:
        page = await api.get(page.body["next"])
        assert page.status == 200
        seen.extend(i["id"] for i in page.body["results"])
    assert seen == list(reversed(first))  # every original once, newest first; none of the late ones
    fresh = await api.get("/api/notifications?limit=2")
    assert [i["id"] for i in fresh.body["results"]] == list(reversed(newer))


async def test_mark_read_then_read_back_immediately(api_stack, http) -> None:  # type: ignore[no-untyped-def]
    api = client(api_stack, http, unique("gina"))
    nids = [(await send(api, title=f"m{i}"))["id"] for i in range(3)]
    reply = await api.patch(f"/api/notifications/{nids[0]}/read")
    assert reply.status == 200
    assert reply.body["read_at"] is not None
    # The very next reads show it, with no waiting on the client's side.
    assert (await api.get(f"/api/notifications/{nids[0]}")).body["read_at"] is not None
    assert [i["id"] for i in (await api.get("/api/notifications?unread=true")).body["results"]] == [nids[2], nids[1]]
    assert (await api.get("/api/notifications/stats")).body["unread"] == 2
    again = await api.patch(f"/api/notifications/{nids[0]}/read")
    assert again.status == 200
    assert again.body["read_at"] == reply.body["read_at"]
    all_read = await api.post("/api/notifications/read-all")
    assert all_read.status == 200
    assert all_read.body["marked"] == 2
    assert all_read.body["more"] is False
    assert (await api.get("/api/notifications?unread=true")).body["results"] == []
    assert (await api.get("/api/notifications/stats")).body["unread"] == 0


async def test_delete_removes_from_lists_and_reads(api_stack, http) -> None:  # type: ignore[no-untyped-def]
    user = unique("hank")
    api = client(api_stack, http, user)
    keep, gone = (await send(api, title="keep"))["id"], (await send(api, title="gone"))["id"]
    other = client(api_stack, http, unique("ivy"))
    assert (await other.delete(f"/api/notifications/{gone}")).status == 404  # not theirs
    reply = await api.delete(f"/api/notifications/{gone}")
    assert reply.status == 204
    assert (await api.get(f"/api/notifications/{gone}")).status == 404
    assert (await api.get(f"/api/notifications/{gone}/events")).status == 404
    assert (await api.patch(f"/api/notifications/{gone}/read")).status == 404
    assert [i["id"] for i in (await api.get("/api/notifications")).body["results"]] == [keep]
    assert (await api.get("/api/notifications/stats")).body["total"] == 1
    admin = client(api_stack, http, "ops", SCOPE_ADMIN)
    assert [i["id"] for i in (await admin.get(f"/api/notifications?user_id={user}")).body["results"]] == [keep]


async def test_devices_register_list_deactivate(api_stack, http) -> None:  # type: ignore[no-untyped-def]
    api = client(api_stack, http, unique("jack"))
    token = "d" * 64
    reply = await api.post("/api/devices", json={"device_token": token, "name": "iPhone"})
    assert reply.status == 201, reply.body
    assert reply.body["active"] is True
    assert reply.headers["Location"] == f"/api/devices/{token}"
    listed = await api.get("/api/devices")
    assert [(d["device_token"], d["name"], d["status"]) for d in listed.body["results"]] == [
        (token, "iPhone", "active")
    ]
    stranger = client(api_stack, http, unique("kim"))
    assert (await stranger.delete(f"/api/devices/{token}")).status == 404
    assert (await stranger.get("/api/devices")).body["results"] == []
    assert (await api.delete(f"/api/devices/{token}")).status == 204
    after = (await api.get("/api/devices")).body["results"]
    assert [(d["active"], d["status"]) for d in after] == [(False, "unregistered")]
    assert (await api.get("/api/devices?active=true")).body["results"] == []
    bad = await api.post("/api/devices", json={"device_token": "not-hex"})
    assert bad.status == 422
    assert bad.content_type == "application/problem+json"


async def test_devices_registered_and_deactivated_with_is_active(api_stack, http) -> None:  # type: ignore[no-untyped-def]
    # The push service's registration body: ``is_active`` true registers, false deactivates.
    api = client(api_stack, http, unique("joy"))
    token = "e" * 64
    reply = await api.post("/api/devices", json={"device_token": token, "platform": "ios", "is_active": True})
    assert (reply.status, reply.body["active"]) == (201, True), reply.body
    stranger = client(api_stack, http, unique("ken"))
    refused = await stranger.post("/api/devices", json={"device_token": token, "is_active": False})
    assert refused.status == 404, refused.body
    off = await api.post("/api/devices", json={"device_token": token.upper(), "is_active": False})
    assert (off.status, off.body["active"], off.body["status"]) == (200, False, "unregistered"), off.body
    assert (await api.get("/api/devices?active=true")).body["results"] == []
    again = await api.post("/api/devices", json={"device_token": token, "is_active": False})
    assert (again.status, again.body["active"]) == (200, False)  # already inactive: nothing new
    bad = await api.post("/api/devices", json={"device_token": token, "is_active": "yes"})
    assert bad.status == 422 and "is_active" in bad.body["detail"]
    back = await api.post("/api/devices", json={"device_token": token, "is_active": True})
    assert (back.status, back.body["active"]) == (201, True)


async def test_contact_details_are_set_by_services(api_stack, http) -> None:  # type: ignore[no-untyped-def]
    user = unique("lena")
    api = client(api_stack, http, user)
    denied = await api.put(f"/api/users/{user}/contact", json={"email": "lena@example.com"})
    assert denied.status == 403
    service = client(api_stack, http, "crm", SCOPE_WRITE)
    body = {"email": "lena@example.com", "channels": ["websocket", "email"], "email_fallback_minutes": 10}
    reply = await service.put(f"/api/users/{user}/contact", json=body)
    assert reply.status == 200, reply.body
    assert reply.body["email"] == "lena@example.com"
    assert reply.body["email_fallback_minutes"] == 10
    mine = await api.get(f"/api/users/{user}/contact")
    assert mine.status == 200
    assert mine.body["channels"] == ["websocket", "email"]
    assert (await client(api_stack, http, unique("max")).get(f"/api/users/{user}/contact")).status == 404
    invalid = await service.put(f"/api/users/{user}/contact", json={"channels": ["fax"]})
    assert invalid.status == 422


async def test_bulk_to_device_tokens(api_stack, http) -> None:  # type: ignore[no-untyped-def]
    owners = [unique("owner") for _ in range(3)]
    tokens = [f"{i:x}" * 64 for i in (1, 2, 3)]
    for owner, token in zip(owners, tokens, strict=True):
        assert (await client(api_stack, http, owner).post("/api/devices", json={"device_token": token})).status == 201
    unknown = "9" * 64
    service = client(api_stack, http, "push-service", SCOPE_WRITE, SCOPE_ADMIN)
    reply = await service.post(
        "/api/notifications/bulk",
        json={"device_tokens": [*tokens, unknown], "title": "Sale!", "priority": "medium"},
        headers={"Idempotency-Key": "sale-1"},
    )
    assert reply.status == 202, reply.body
    assert reply.body["requested"] == 3
    bulk_id = reply.body["bulk_id"]
    # The id its request would have had (no user: nobody owns the token), for `herald why`.
    refusal = {"target": unknown, "reason": "unknown device token", "notification_id": derived_id(bulk_id, "", unknown)}
    assert reply.body["refused"] == [refusal]

    async def projected() -> list[dict[str, Any]] | None:
        page = await service.get(f"/api/notifications?bulk_id={bulk_id}&user_id={owners[0]}")
        return page.body["results"] or None

    [item] = await eventually(projected, timeout=60, what="the bulk push in the owner's history")
    assert (item["device_token"], item["channels"]) == (tokens[0], ["apns"])
    retried = await service.post(
        "/api/notifications/bulk",
        json={"device_tokens": [*tokens, unknown], "title": "Sale!", "priority": "medium"},
        headers={"Idempotency-Key": "sale-1"},
    )
    assert retried.body["bulk_id"] == bulk_id  # same key, same bulk and notification ids
    assert retried.body["refused"] == [refusal]


# Last in the module: its 1,500 notifications keep the sinks busy for a while after it.
async def test_bulk_to_many_users(api_stack, http) -> None:  # type: ignore[no-untyped-def]
    # 1,500 users fill the projector's batches; the 100,000-user bulk is benchmarks.bulk's
    # (it fails unless every request is accepted and projected, with the roles as processes).
    _stack, _ = api_stack
    service = client(api_stack, http, "newsletter", SCOPE_WRITE)
    prefix = unique("bulk")
    users = [f"{prefix}-{i}" for i in range(1_500)]
    reply = await service.post(
        "/api/notifications/bulk", json={"user_ids": users, "title": "Weekly digest", "priority": "low"}
    )
    assert reply.status == 202, reply.body
    assert reply.body["requested"] == len(users)
    assert reply.body["refused"] == []
    bulk_id = reply.body["bulk_id"]
    assert reply.headers["Location"] == f"/api/notifications/bulk/{bulk_id}"

    async def all_projected() -> dict[str, Any] | None:
        status = await service.get(f"/api/notifications/bulk/{bulk_id}")
        return status.body if status.status == 200 and status.body["projected"] == len(users) else None

    summary = await eventually(
        all_projected, timeout=120, interval=0.5, what=f"{len(users)} bulk notifications projected"
    )
    assert set(summary["by_status"]) <= {"pending", "delivered"}
    one = client(api_stack, http, users[1234])
    mine = (await one.get("/api/notifications")).body["results"]
    assert [(n["title"], n["bulk_id"]) for n in mine] == [("Weekly digest", bulk_id)]
    assert (await client(api_stack, http, unique("nobody")).get(f"/api/notifications/bulk/{bulk_id}")).status == 403


async def test_paths_with_a_trailing_slash_reach_the_same_operations(api_stack, http) -> None:  # type: ignore[no-untyped-def]
    # The spelling of the services Herald replaces: every path with a trailing slash.
    api = client(api_stack, http, unique("slash"))
    base = api.base
    headers = {"Authorization": f"Bearer {api.token}"}
    async with http.post(
        f"{base}/api/notifications/", json={"title": "slashed"}, headers=headers, allow_redirects=False
    ) as resp:
        assert (resp.status, resp.headers["Location"]) == (308, "/api/notifications")
    async with http.post(f"{base}/api/notifications/", json={"title": "slashed"}, headers=headers) as resp:
        assert resp.status == 202, await resp.text()  # the redirect kept the method and the body
        nid = (await resp.json())["id"]
    async with http.get(f"{base}/api/notifications/?limit=1", headers=headers) as resp:
        assert resp.status == 200 and [n["id"] for n in (await resp.json())["results"]] == [nid]
    ws = await http.ws_connect(base.replace("http", "ws") + f"/ws/notifications/?token={api.token}")
    try:
        await ws.send_json({"type": "ping"})
        await next_frame(ws, "pong")
    finally:
        await ws.close()
    async with http.get(f"{base}/api/nothing-here/", headers=headers) as resp:
        assert resp.status == 404 and resp.content_type == "application/problem+json"
