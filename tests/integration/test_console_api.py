"""The operator console's REST API (``/api/admin/``) on real parts: broker, worker, projector, Postgres, Redis.

One stack serves the module; every test uses its own users, so tests do not see each
other's data (the overview's counts are global: its test asserts lower bounds and
differences it caused). Each test asserts what an operator sees on the console.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from api.auth import SCOPE_ADMIN, SCOPE_WRITE
from api.rest.admin.log_probe import CACHE_SECONDS, TIMEOUT_SECONDS, LogProbe
from api.rest.envelopes import fact
from engine.settings import Settings
from engine.topics import TopicNames
from herald.broker import free_port
from herald.stack import Stack, run_stack
from projections.admin_queries import STATEMENT_TIMEOUT_MS, AdminQueries
from schemas.channels import REGISTRY
from schemas.events import DeliveryFailed, DeviceInvalidated
from tests.support.api import Api, isolated_settings, own_database, unique
from tests.support.clients import UserClient, next_frame
from tests.support.kafka import publish
from tests.support.pager_channel import declared
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(300)
LOW_LIMIT = 3
"""Low-priority notifications a user may get per window here: a bulk can run into it."""


@pytest.fixture(scope="module")
async def console_stack(kafka_bootstrap: str, redis_url: str) -> AsyncIterator[tuple[Stack, Settings]]:
    with own_database("herald_console") as url:
        settings = isolated_settings(kafka_bootstrap, url, redis_url, rate_limit_low=LOW_LIMIT)
        async with run_stack(settings) as stack:
            yield stack, settings


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def base(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.http_port}"


def operator(console_stack: tuple[Stack, Settings], http: aiohttp.ClientSession) -> Api:
    stack, settings = console_stack
    return Api.for_user(http, base(stack), settings, unique("ops"), SCOPE_ADMIN)


def service(console_stack: tuple[Stack, Settings], http: aiohttp.ClientSession) -> Api:
    stack, settings = console_stack
    return Api.for_user(http, base(stack), settings, unique("svc"), SCOPE_WRITE)


async def send(api: Api, user: str, **body: Any) -> str:
    reply = await api.post("/api/notifications", json={"user_id": user, "title": "hello", **body})
    assert reply.status == 202, reply.body
    return str(reply.body["id"])


async def search(ops: Api, **params: str) -> dict[str, Any]:
    reply = await ops.get("/api/admin/notifications", params=params)
    assert reply.status == 200, reply.body
    return reply.body  # type: ignore[no-any-return]


ROUTES = (
    "/api/admin/channels",
    "/api/admin/overview",
    "/api/admin/notifications",
    "/api/admin/notifications/some-id",
    "/api/admin/users/someone",
    "/api/admin/bulks",
    "/api/admin/bulks/some-bulk",
)


async def test_only_an_admin_token_reads_the_console_api(console_stack, http) -> None:  # type: ignore[no-untyped-def]
    stack, settings = console_stack
    user = Api.for_user(http, base(stack), settings, unique("ana"))
    writer = service(console_stack, http)
    anonymous = Api(http, base(stack), "")
    ops = operator(console_stack, http)
    for path in ROUTES:
        for caller, status in ((anonymous, 401), (user, 403), (writer, 403)):
            reply = await caller.call("GET", path, headers={} if caller.token else {"Authorization": ""})
            assert reply.status == status, (path, reply.body)
            assert reply.content_type == "application/problem+json", path
        assert (await ops.get(path)).status in (200, 404), path


async def test_the_channel_list_is_the_registry_s_and_follows_a_declared_channel(console_stack, http) -> None:  # type: ignore[no-untyped-def]
    ops = operator(console_stack, http)
    body = (await ops.get("/api/admin/channels")).body
    assert [c["name"] for c in body["results"]] == list(REGISTRY.names) == ["websocket", "email", "apns", "webhook"]
    by_name = {c["name"]: c for c in body["results"]}
    assert by_name["apns"] == {
        "name": "apns",
        "target": "device_token",
        "in_all": True,
        "fallback_after": None,
        "platform": "ios",
    }
    assert (by_name["email"]["fallback_after"], by_name["webhook"]["in_all"]) == ("websocket", False)
    assert body["platforms"] == ["ios"]
    with declared():  # a channel declared in its own module shows with no edit here or in the console
        body = (await ops.get("/api/admin/channels")).body
    assert [c["name"] for c in body["results"]][-1] == "pager"
    assert body["platforms"] == ["ios", "pageros"]


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/api/admin/overview", {"minutes": "0"}, "minutes"),
        ("/api/admin/overview", {"minutes": "61"}, "minutes"),
        ("/api/admin/overview", {"minutes": "ten"}, "minutes"),
        ("/api/admin/notifications", {"limit": "201"}, "limit"),
        ("/api/admin/notifications", {"status": "lost"}, "status"),
        ("/api/admin/notifications", {"priority": "urgent"}, "priority"),
        ("/api/admin/notifications", {"channel": "websocket,email"}, "channel"),
        ("/api/admin/notifications", {"since": "yesterday"}, "since"),
        ("/api/admin/notifications", {"until": "2026-01-01T00:00:00"}, "until"),
        ("/api/admin/notifications", {"q": "x" * 201}, "q"),
        ("/api/admin/notifications", {"q": ""}, "q"),
        ("/api/admin/notifications", {"user": "u\x00"}, "user"),
        ("/api/admin/notifications", {"cursor": "not-a-cursor"}, "cursor"),
        ("/api/admin/bulks", {"limit": "0"}, "limit"),
    ],
)
async def test_bad_parameters_are_422_naming_the_parameter(console_stack, http, path, params, parameter) -> None:  # type: ignore[no-untyped-def]
    reply = await operator(console_stack, http).get(path, params=params)
    assert reply.status == 422, reply.body
    assert reply.content_type == "application/problem+json"
    assert reply.body["parameter"] == parameter
    assert parameter in reply.body["detail"]


async def test_search_finds_any_users_notifications_by_text_and_filters(console_stack, http) -> None:  # type: ignore[no-untyped-def]
    ops, svc = operator(console_stack, http), service(console_stack, http)
    ana, ben = unique("ana"), unique("ben")
    tag = unique("Invoice")
    ids = {
        "ana-high": await send(svc, ana, title=f"{tag} overdue", priority="high", category="billing"),
        "ana-low": await send(svc, ana, title="Weekly digest", body=f"your {tag.upper()} is ready", priority="low"),
        "ben": await send(svc, ben, title=f"{tag} paid", priority="medium", category="billing"),
        "percent": await send(svc, ben, title="100% done", priority="medium"),
    }

    async def all_found() -> dict[str, Any] | None:
        found = await search(ops, q=tag.lower())
        return found if len(found["items"]) == 3 else None

    found = await eventually(all_found, what="three notifications matching the text")
    # Both users, newest first, with their user id, case-insensitive in title *and* body.
    assert [i["id"] for i in found["items"]] == [ids["ben"], ids["ana-low"], ids["ana-high"]]
    assert {i["user_id"] for i in found["items"]} == {ana, ben}
    assert found["next_cursor"] is None

    assert [i["id"] for i in (await search(ops, q=tag, user=ana))["items"]] == [ids["ana-low"], ids["ana-high"]]
    assert [i["id"] for i in (await search(ops, q=tag, priority="high"))["items"]] == [ids["ana-high"]]
    billing = await search(ops, q=tag, category="billing", status="pending,sent")
    assert {i["id"] for i in billing["items"]} == {ids["ana-high"], ids["ben"]}
    assert (await search(ops, q=tag, channel="apns"))["items"] == []
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (await search(ops, q=tag, since=future))["items"] == []
    # `%` and `_` are plain characters, not wildcards.
    assert [i["id"] for i in (await search(ops, user=ben, q="0% d"))["items"]] == [ids["percent"]]
    assert (await search(ops, user=ben, q="1_0"))["items"] == []

    # One at a time: the cursor walks the same three, none twice, none skipped.
    seen, cursor = [], None
    while True:
        page = await search(ops, q=tag, limit="1", **({"cursor": cursor} if cursor else {}))
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [ids["ben"], ids["ana-low"], ids["ana-high"]]


async def test_notification_detail_shows_targets_trail_and_explanation(console_stack, http) -> None:  # type: ignore[no-untyped-def]
    stack, settings = console_stack
    ops, svc = operator(console_stack, http), service(console_stack, http)
    cara = UserClient(http, base(stack), settings, unique("cara"))
    async with await cara.websocket() as ws:
        await next_frame(ws, "missed_notifications")
        nid = await send(svc, cara.user, title="Your order shipped", priority="high")
        await next_frame(ws, "notification")

        async def delivered() -> dict[str, Any] | None:
            reply = await ops.get(f"/api/admin/notifications/{nid}")
            assert reply.status == 200, reply.body
            states = {t["channel"]: t["state"] for t in reply.body["targets"]}
            types = [e["type"] for e in reply.body["trail"]]
            return reply.body if states == {"websocket": "delivered"} and "delivery.succeeded" in types else None

        detail = await eventually(delivered, what="the websocket delivery in the detail")
    assert detail["notification"]["id"] == nid
    # `sent` is the push service's name for delivered, as in the user API.
    assert [i["id"] for i in (await search(ops, user=cara.user, status="sent"))["items"]] == [nid]
    assert detail["notification"]["user_id"] == cara.user
    [target] = detail["targets"]
    assert target["attempts"] >= 1
    assert target["delivered_at"] is not None
    assert target["error"] is None
    # The trail is the log's: the same partition and offset as the user's own event trail.
    own = Api.for_user(http, base(stack), settings, cara.user)
    events = (await own.get(f"/api/notifications/{nid}/events")).body["events"]
    assert [(e["type"], e["partition"], e["offset"]) for e in detail["trail"]] == [
        (e["type"], e["partition"], e["offset"]) for e in events
    ]
    accepted = detail["trail"][0]
    assert accepted["type"] == "notification.accepted"
    assert "high priority to websocket" in accepted["summary"]
    # The explanation is `herald why`'s, read from Kafka.
    assert detail["explanation_error"] is None
    assert detail["explanation"][0] == f"notification {nid} for user {cara.user}"
    assert any(line.startswith("decision: ") for line in detail["explanation"])

    missing = await ops.get("/api/admin/notifications/no-such-notification")
    assert missing.status == 404
    assert missing.content_type == "application/problem+json"


async def test_user_page_shows_inbox_devices_contact_presence_and_rate_window(console_stack, http) -> None:  # type: ignore[no-untyped-def]
    stack, settings = console_stack
    ops, svc = operator(console_stack, http), service(console_stack, http)
    dan = UserClient(http, base(stack), settings, unique("dan"))
    good, bad = "a1" * 32, "b2" * 32
    admin_writer = Api.for_user(http, base(stack), settings, unique("ops"), SCOPE_ADMIN)
    for token in (good, bad):
        reply = await admin_writer.post("/api/devices", json={"user_id": dan.user, "device_token": token})
        assert reply.status in (200, 201, 202), reply.body
    assert stack.publisher is not None
    await stack.publisher.append(
        [
            fact(
                DeviceInvalidated(user_id=dan.user, device_token=bad, reason="BadDeviceToken"),
                user_id=dan.user,
                subject=None,
            )
        ]
    )
    contact = await svc.put(
        f"/api/users/{dan.user}/contact", json={"email": "dan@example.com", "channels": ["websocket"]}
    )
    assert contact.status in (200, 202), contact.body
    sent = [await send(svc, dan.user, title=f"high {i}", priority="high") for i in range(2)]
    sent.append(await send(svc, dan.user, title="low", priority="low"))
    more_low = [await send(svc, dan.user, title=f"low {i}", priority="low") for i in range(LOW_LIMIT)]
    ops_path = f"/api/admin/users/{dan.user}"

    async def complete() -> dict[str, Any] | None:
        body = (await ops.get(ops_path)).body
        devices = {d["device_token"]: d for d in body["devices"]}
        ready = (
            body["inbox"]["total"] == len(sent) + len(more_low)
            and devices.get(bad, {}).get("status") == "invalid"
            and body["contact"] is not None
        )
        return body if ready else None

    body = await eventually(complete, timeout=60, what="the user's notifications, devices and contact projected")
    assert body["user_id"] == dan.user
    assert [i["id"] for i in body["inbox"]["items"]][-len(sent) :] == list(reversed(sent))
    assert body["inbox"]["unread"] == len(sent) + len(more_low)
    devices = {d["device_token"]: d for d in body["devices"]}
    assert (devices[good]["active"], devices[good]["status"]) == (True, "active")
    assert (devices[bad]["active"], devices[bad]["status"], devices[bad]["reason"]) == (
        False,
        "invalid",
        "BadDeviceToken",
    )
    assert body["contact"]["email"] == "dan@example.com"
    assert body["presence"] == {"online": False, "connections": 0}
    # 2 high and 3 low accepted (the 4th low hit the limit of 3 and does not count).
    window = settings.rate_limit_window_seconds
    assert body["rate_limits"] == {
        "high": {"used": 2, "limit": settings.rate_limit_high, "window_seconds": window},
        "medium": {"used": 0, "limit": settings.rate_limit_medium, "window_seconds": window},
        "low": {"used": LOW_LIMIT, "limit": LOW_LIMIT, "window_seconds": window},
    }
    statuses = [i["status"] for i in body["inbox"]["items"]]
    assert statuses.count("rate_limited") == 1

    async with await dan.websocket() as ws, await dan.websocket() as ws2:
        await next_frame(ws, "missed_notifications")
        await next_frame(ws2, "missed_notifications")

        async def online() -> dict[str, Any] | None:
            presence = (await ops.get(ops_path)).body["presence"]
            return presence if presence["connections"] == 2 else None

        assert await eventually(online, what="two connections") == {"online": True, "connections": 2}

    stranger = (await ops.get(f"/api/admin/users/{unique('nobody')}")).body
    assert stranger["inbox"] == {"items": [], "unread": 0, "total": 0}
    assert (stranger["devices"], stranger["contact"]) == ([], None)


async def test_bulks_show_progress_by_status_and_refused_targets(console_stack, http) -> None:  # type: ignore[no-untyped-def]
    ops, svc = operator(console_stack, http), service(console_stack, http)
    users = [unique("eve") for _ in range(4)]
    hot = users[-1]
    for i in range(LOW_LIMIT):  # the last recipient has used up its low-priority window
        await send(svc, hot, title=f"earlier {i}", priority="low")
    single = await send(svc, users[0], title="not a bulk")
    reply = await svc.post("/api/notifications/bulk", json={"user_ids": users, "title": "Sale", "priority": "low"})
    assert reply.status == 202, reply.body
    bulk_id = reply.body["bulk_id"]

    async def projected() -> dict[str, Any] | None:
        found = await ops.get(f"/api/admin/bulks/{bulk_id}")
        return found.body if found.status == 200 and found.body["total"] == len(users) else None

    detail = await eventually(projected, timeout=60, what="the whole bulk projected")
    assert detail["bulk_id"] == bulk_id
    assert detail["by_status"].get("rate_limited") == 1
    assert sum(detail["by_status"].values()) == len(users)
    assert detail["refused_total"] == 1
    [refused] = detail["refused"]
    assert refused["target"] == hot
    assert refused["reason"] == f"rate limit of {LOW_LIMIT} per {3600}s exceeded"

    listed = (await ops.get("/api/admin/bulks", params={"limit": "200"})).body["items"]
    mine = [b for b in listed if b["bulk_id"] == bulk_id]
    assert len(mine) == 1
    assert (mine[0]["total"], mine[0]["refused"], mine[0]["by_status"]) == (len(users), 1, detail["by_status"])
    assert mine[0]["created_at"] == detail["created_at"]
    # A single send is not a bulk, whatever its correlation id.
    single_bulk_id = (await search(ops, user=users[0], q="not a bulk"))["items"][0]["bulk_id"]
    assert single_bulk_id is None or single_bulk_id not in {b["bulk_id"] for b in listed}
    assert single not in {b["bulk_id"] for b in listed}
    # Newest first: a later bulk comes before this one.
    later = await svc.post("/api/notifications/bulk", json={"user_ids": [users[0]], "title": "Later"})
    later_id = later.body["bulk_id"]

    async def later_listed() -> list[str] | None:
        items = (await ops.get("/api/admin/bulks", params={"limit": "2"})).body["items"]
        return [b["bulk_id"] for b in items] if items and items[0]["bulk_id"] == later_id else None

    assert await eventually(later_listed, what="the later one-target bulk listed first") == [later_id, bulk_id]
    assert (await ops.get("/api/admin/bulks/no-such-bulk")).status == 404


async def test_overview_counts_what_the_engine_did(console_stack, http, kafka_bootstrap: str) -> None:  # type: ignore[no-untyped-def]
    stack, settings = console_stack
    ops, svc = operator(console_stack, http), service(console_stack, http)
    before = (await ops.get("/api/admin/overview", params={"minutes": "5"})).body
    fred = UserClient(http, base(stack), settings, unique("fred"))
    async with await fred.websocket() as ws:
        await next_frame(ws, "missed_notifications")
        for priority in ("high", "high", "medium", "low"):
            sent = await send(svc, fred.user, title=f"{priority} news", priority=priority)
            await next_frame(ws, "notification")
    # An APNs attempt that failed, as the sink records it.
    assert stack.publisher is not None
    failure = DeliveryFailed(
        notification_id=sent,
        user_id=fred.user,
        channel="apns",
        target="c3" * 32,
        attempt=1,
        retriable=True,
        error="503",
    )
    await stack.publisher.append([fact(failure, user_id=fred.user, subject=sent)])
    names = TopicNames(settings.topic_prefix)
    await publish(kafka_bootstrap, names.request("high"), [(fred.user.encode(), b"{not json")])

    async def counted() -> dict[str, Any] | None:
        body = (await ops.get("/api/admin/overview", params={"minutes": "5"})).body
        done = (
            body["totals"]["delivered"] - before["totals"]["delivered"] >= 4
            and sum(body["throughput"]["failed"]["apns"]) - sum(before["throughput"]["failed"]["apns"]) >= 1
            and body["totals"]["dead_letters"] - (before["totals"]["dead_letters"] or 0) >= 1
            and [lag["lag"] for lag in body["consumer_lag"] if lag["role"] == "projector"] == [0]
            and [lag["lag"] is None for lag in body["consumer_lag"] if lag["role"] == "worker"] == [False]
        )
        return body if done else None

    body = await eventually(counted, timeout=60, interval=0.5, what="the deliveries, the dead letter, no projector lag")
    assert body["bucket_seconds"] == 10
    buckets = body["throughput"]["buckets"]
    assert len(buckets) == 30
    assert all(
        len(series) == 30
        for part in ("accepted", "delivered", "failed", "delivered_by_priority", "failed_by_priority")
        for series in body["throughput"][part].values()
    )
    assert (
        datetime.fromisoformat(buckets[0])
        <= datetime.fromisoformat(body["now"])
        < datetime.fromisoformat(buckets[-1]) + timedelta(seconds=10)
    )
    accepted = {
        p: sum(body["throughput"]["accepted"][p]) - sum(before["throughput"]["accepted"][p])
        for p in ("high", "medium", "low")
    }
    assert accepted["high"] >= 2 and accepted["medium"] >= 1 and accepted["low"] >= 1
    assert sum(body["throughput"]["delivered"]["websocket"]) == body["totals"]["delivered"] - sum(
        sum(body["throughput"]["delivered"][c]) for c in ("email", "apns")
    )
    # The same attempts by their notification's priority: fred's four deliveries and the failed APNs attempt
    # of his last (low) notification.
    by_priority = {
        part: {
            p: sum(body["throughput"][part][p]) - sum(before["throughput"][part][p]) for p in ("high", "medium", "low")
        }
        for part in ("delivered_by_priority", "failed_by_priority")
    }
    assert by_priority["delivered_by_priority"]["high"] >= 2
    assert by_priority["delivered_by_priority"]["medium"] >= 1 and by_priority["delivered_by_priority"]["low"] >= 1
    assert by_priority["failed_by_priority"]["low"] >= 1
    assert body["totals"]["accepted"] == sum(map(sum, body["throughput"]["accepted"].values()))
    latency = body["latency_ms"]
    assert latency["count"] >= 4
    assert 0 <= latency["p50"] <= latency["p90"] <= latency["p99"] < 30_000
    roles = {lag["role"]: lag for lag in body["consumer_lag"]}
    assert roles["worker"]["group"] == settings.app_id
    assert roles["projector"]["group"] == settings.projector_group
    assert set(roles["projector"]["by_topic"]) == {names.events}
    assert roles["projector"]["lag"] == sum(roles["projector"]["by_topic"].values())
    assert roles["worker"]["lag"] == sum(roles["worker"]["by_topic"].values())

    async def requests_done() -> bool:
        body = (await ops.get("/api/admin/overview", params={"minutes": "1"})).body
        [worker] = [lag for lag in body["consumer_lag"] if lag["role"] == "worker"]
        return (
            all(worker["by_topic"].get(topic, 0) == 0 for topic in names.requests)
            and names.request("high") in worker["by_topic"]
        )

    await eventually(requests_done, timeout=30, interval=0.5, what="the worker's commits at the end of every request")
    letters = body["dead_letters"]
    assert len(letters["buckets"]) == len(letters["counts"]) == 5
    assert datetime.fromisoformat(letters["buckets"][-1]) <= datetime.fromisoformat(body["now"])
    assert letters["counts"][-1] + letters["counts"][-2] >= 1  # this minute (or the last, at a boundary)
    assert sum(letters["counts"]) == body["totals"]["dead_letters"]
    assert body["broker_error"] is None


async def test_broker_figures_are_probed_at_most_once_a_second(console_stack) -> None:  # type: ignore[no-untyped-def]
    stack, settings = console_stack
    assert stack.engine is not None
    probes = 0
    queries = AdminQueries(stack.engine)

    async def positions(topic: str) -> dict[int, int]:
        nonlocal probes
        probes += 1
        return await queries.projected_positions(topic)

    probe = LogProbe(settings, positions)
    try:
        start = datetime.now(UTC).replace(second=0, microsecond=0)
        pages = await asyncio.gather(*(probe.figures(start, 15) for _ in range(20)))  # 20 pages refreshing at once
        assert probes == 1
        assert all(page is pages[0] for page in pages)
        first = time.monotonic()

        async def probed_again() -> bool:
            await probe.figures(start, 15)
            return probes == 2

        await eventually(probed_again, interval=0.1, what="a second probe once the figures are a second old")
        assert time.monotonic() - first >= CACHE_SECONDS * 0.9
        assert probes == 2
    finally:
        await probe.close()


async def test_worker_lag_is_what_its_group_has_not_committed(console_stack, kafka_bootstrap: str) -> None:  # type: ignore[no-untyped-def]
    stack, settings = console_stack
    assert stack.engine is not None
    names = TopicNames(settings.topic_prefix)
    group = unique("stalled-worker")
    topic = names.request("low")
    key = unique("lagging").encode()
    await publish(kafka_bootstrap, topic, [(key, b"{}")] * 5)  # ingest dead-letters them: harmless
    # A worker of another group that read nothing of this partition but its first record.
    await _commit_behind_the_end(kafka_bootstrap, group, topic, key, 4)
    queries = AdminQueries(stack.engine)
    probe = LogProbe(settings.replace(app_id=group), queries.projected_positions)
    try:
        found = await probe.figures(datetime.now(UTC).replace(second=0, microsecond=0), 1)
    finally:
        await probe.close()
    [worker] = [lag for lag in found.lag if lag.role == "worker"]
    assert (worker.group, worker.lag, worker.by_topic) == (group, 4, {topic: 4})


async def test_in_a_priority_split_high_requests_lag_under_the_ingesting_group(
    console_stack, kafka_bootstrap: str
) -> None:  # type: ignore[no-untyped-def]
    """Compose's topology: ``worker-high`` (group ``APP-high``) ingests ``requests.high``; the
    ``APP`` group's offsets on it are where the split left them. The lag of those partitions
    is the ingesting group's, not the old offsets' growing distance to the end."""
    stack, settings = console_stack
    assert stack.engine is not None
    names = TopicNames(settings.topic_prefix)
    app = unique("split")
    topic = names.request("high")
    key = unique("split-key").encode()
    await publish(kafka_bootstrap, topic, [(key, b"{}")] * 6)  # ingest dead-letters them: harmless
    for group, behind in ((app, 5), (f"{app}-high", 2)):
        await _commit_behind_the_end(kafka_bootstrap, group, topic, key, behind)
    probe = LogProbe(settings.replace(app_id=app), AdminQueries(stack.engine).projected_positions)
    try:
        found = await probe.figures(datetime.now(UTC).replace(second=0, microsecond=0), 1)
    finally:
        await probe.close()
    workers = [(lag.group, lag.lag, lag.by_topic) for lag in found.lag if lag.role == "worker"]
    assert workers == [(f"{app}-high", 2, {topic: 2})]


async def _commit_behind_the_end(bootstrap: str, group: str, topic: str, key: bytes, behind: int) -> None:
    """Commit for ``group``, on the partition of ``topic`` that ``key`` goes to, ``behind`` records before its end."""
    committer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await committer.start()
    try:
        await committer.topics()
        ends = await committer.end_offsets([TopicPartition(topic, p) for p in committer.partitions_for_topic(topic)])
        [tp] = [tp for tp in ends if tp.partition == _partition_of(key, len(ends))]
        committer.assign([tp])
        await committer.commit({tp: ends[tp] - behind})
    finally:
        await committer.stop()


def _partition_of(key: bytes, partitions: int) -> int:
    """The partition Herald's producers (Kafka's default partitioner) put ``key`` in."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


async def test_an_unreachable_broker_leaves_the_broker_figures_out_with_the_reason(console_stack) -> None:  # type: ignore[no-untyped-def]
    stack, settings = console_stack
    assert stack.engine is not None
    nobody = settings.replace(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    probe = LogProbe(nobody, AdminQueries(stack.engine).projected_positions)
    try:
        began = time.monotonic()
        found = await probe.figures(datetime.now(UTC).replace(second=0, microsecond=0), 15)
        assert time.monotonic() - began < TIMEOUT_SECONDS + 2
    finally:
        await probe.close()
    assert (found.lag, found.dead_letters) == ([], [])
    assert found.error is not None and "broker did not answer" in found.error


async def test_a_search_the_database_cannot_finish_in_time_is_a_503_that_says_how_to_narrow_it(
    console_stack, http
) -> None:  # type: ignore[no-untyped-def]
    _, settings = console_stack
    ops = operator(console_stack, http)
    # Another session holds the table (a migration, a vacuum full): the search waits, then is cancelled.
    async with await psycopg.AsyncConnection.connect(settings.database_url.replace("+psycopg", "")) as blocker:
        await blocker.execute("LOCK TABLE notifications IN ACCESS EXCLUSIVE MODE")
        began = time.monotonic()
        reply = await ops.get("/api/admin/notifications", params={"q": "anything"})
        waited = time.monotonic() - began
        await blocker.rollback()
    assert reply.status == 503, reply.body
    assert reply.content_type == "application/problem+json"
    assert "narrow it" in reply.body["detail"]
    assert STATEMENT_TIMEOUT_MS / 1000 <= waited < STATEMENT_TIMEOUT_MS / 1000 + 5
    assert (await ops.get("/api/admin/notifications", params={"q": "anything"})).status == 200
