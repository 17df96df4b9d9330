"""The console's dead letters on real parts (Tansu, Postgres, Redis, the whole stack): browse
newest first with reasons and source offsets, re-drive one record or a filtered set, each
re-drive a ``deadletter.redriven`` naming the operator.

The "fixed after" case is a request larger than the first worker's size limit: dead-lettered,
then the worker restarts with a larger limit and the operator re-drives it; the user's
WebSocket receives it. A record that is still bad comes back to the dead letters with its
reason. Before this, there was no ``/api/admin/deadletters`` at all (404).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import select

from api.auth import SCOPE_ADMIN
from api.rest.admin import deadletters
from engine.settings import Settings
from engine.topics import TopicNames
from herald.stack import Stack, run_stack
from projections.models import EventRow, SkippedEventRow
from tests.integration.audit_support import herald
from tests.support.api import Api, isolated_settings, own_database, unique
from tests.support.clients import UserClient, next_frame
from tests.support.kafka import publish, request
from tests.support.log_reader import TopicTail, read_topic
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

SMALL_LIMIT = 2048
"""The first worker's request size limit (bytes); the second runs with the default 16 KiB."""
OPERATOR = "ops-ana"
PATH = "/api/admin/deadletters"


@dataclass
class World:
    stack: Stack
    settings: Settings
    names: TopicNames
    big: dict[str, Any]
    """A request dead-lettered by the first worker for its size."""
    admin: Api
    user: Api
    http: aiohttp.ClientSession
    events: TopicTail


@pytest.fixture(scope="module")
async def world(kafka_bootstrap: str, redis_url: str) -> AsyncIterator[World]:
    with own_database("herald_deadletters") as url:
        first = isolated_settings(kafka_bootstrap, url, redis_url, max_request_bytes=SMALL_LIMIT)
        names = TopicNames(first.topic_prefix)
        big = request(unique("big"), "Quarterly report", body="q" * 4000)  # ~4.2 KB
        async with run_stack(first, worker=True, projector=False, api=False):
            await publish(
                kafka_bootstrap, names.request("high"), [(big["data"]["user_id"].encode(), json.dumps(big).encode())]
            )
            await read_topic(kafka_bootstrap, names.deadletter, until=1, timeout=60)
        # The operator's fix: the worker restarts with a larger limit (the default, 16 KiB).
        settings = first.replace(max_request_bytes=16 * 1024)
        async with run_stack(settings) as stack, aiohttp.ClientSession() as http:
            events = TopicTail(kafka_bootstrap, names.events)
            await events.start()
            base = f"http://127.0.0.1:{stack.http_port}"
            try:
                yield World(
                    stack,
                    settings,
                    names,
                    big,
                    Api.for_user(http, base, settings, OPERATOR, SCOPE_ADMIN),
                    Api.for_user(http, base, settings, "someone"),
                    http,
                    events,
                )
            finally:
                await events.stop()


async def _mine(world: World, count: int, key_prefix: str, **params: Any) -> list[dict[str, Any]]:
    """The dead letters whose key starts with ``key_prefix``, once there are ``count`` (newest first)."""

    async def listed() -> list[dict[str, Any]] | None:
        reply = await world.admin.get(PATH, params={"limit": 200, **params})
        assert reply.status == 200, reply.body
        found = [i for i in reply.body["items"] if (i["key"] or "").startswith(key_prefix)]
        return found if len(found) >= count else None

    return await eventually(listed, timeout=60, what=f"{count} dead letters keyed {key_prefix}*")


async def test_admin_scope_only_and_bad_input_is_a_422_naming_the_parameter(world: World) -> None:
    base = world.admin.base
    async with world.http.get(base + PATH) as resp:
        assert resp.status == 401 and resp.content_type == "application/problem+json"
    for method, path, body in (
        ("GET", PATH, None),
        ("POST", PATH + "/redrive", {"records": [{"partition": 0, "offset": 0}]}),
    ):
        reply = await world.user.call(method, path, json=body)
        assert reply.status == 403 and reply.content_type == "application/problem+json", reply.body

    for params, name in (
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "\u00b2"}, "limit"),
        ({"before": "abc"}, "before"),
        ({"before": "0:99999999"}, "before"),
        ({"reason": "r" * 201}, "reason"),
    ):
        reply = await world.admin.get(PATH, params=params)
        assert reply.status == 422 and reply.content_type == "application/problem+json", (params, reply.body)
        assert reply.body["parameter"] == name and name in reply.body["detail"]

    too_many = [{"partition": 0, "offset": i} for i in range(501)]
    for body, name in (
        ({}, "records"),
        ({"records": [{"partition": 0, "offset": 0}], "filter": {"reason": "x"}}, "records"),
        ({"records": too_many}, "records"),
        ({"records": [{"partition": 0, "offset": -1}]}, "records[0].offset"),
        ({"records": [{"partition": True, "offset": 1}]}, "records[0].partition"),
        ({"filter": {}}, "filter"),
        ({"filter": {"reason": "x"}, "max": 501}, "max"),
        ({"filter": {"topic": "x"}}, "filter.topic"),
        ({"records": [{"partition": 0, "offset": 0}], "force": "yes"}, "force"),
    ):
        reply = await world.admin.post(PATH + "/redrive", json=body)
        assert reply.status == 422 and reply.content_type == "application/problem+json", (body, reply.body)
        assert reply.body["parameter"] == name, reply.body
    async with world.http.post(
        base + PATH + "/redrive", data=b"{not json", headers={"Authorization": f"Bearer {world.admin.token}"}
    ) as resp:
        assert resp.status == 400 and resp.content_type == "application/problem+json"

    # Coordinates that name no dead letter are reported, not an error.
    reply = await world.admin.post(
        PATH + "/redrive", json={"records": [{"partition": 0, "offset": 10**9}, {"partition": 999, "offset": 0}]}
    )
    assert reply.status == 202
    assert reply.body["redriven"] == 0
    assert [s["why"] for s in reply.body["skipped"]] == [
        "no such dead letter (offset out of range)",
        f"{world.names.deadletter} has no partition 999",
    ]


async def test_browse_newest_first_with_reason_source_and_preview_page_by_page(world: World) -> None:
    topic = world.names.request("medium")
    tag = unique("browse")
    records: list[tuple[bytes, bytes]] = [(f"{tag}-{i}".encode(), f"{{not json {i}".encode()) for i in range(5)]
    records.append((f"{tag}-5".encode(), b"\xff" + b"z" * 5000))  # large, not UTF-8
    await publish(world.settings.kafka_bootstrap, topic, records)  # type: ignore[arg-type]

    mine = await _mine(world, 6, tag, source_topic=topic)
    assert len(mine) == 6
    times = [i["timestamp"] for i in mine]
    assert times == sorted(times, reverse=True), "newest first"
    by_key = {i["key"]: i for i in mine}
    for i in range(5):
        item = by_key[f"{tag}-{i}"]
        assert item["source_topic"] == topic
        assert isinstance(item["source_partition"], int) and isinstance(item["source_offset"], int)
        assert item["reason"], "every dead letter says why"
        assert item["value_preview"] == f"{{not json {i}" and item["size"] == len(records[i][1])
        assert item["redriven"] is False
    large = by_key[f"{tag}-5"]
    assert large["size"] == 5001
    assert len(large["value_preview"].encode()) <= 2048 and large["value_preview"].startswith("\ufffdzzz")

    # Pages of 2 follow `next` through everything without a repeat or a gap, in the same order.
    everything = (await world.admin.get(PATH, params={"limit": 200})).body["items"]
    assert len(everything) >= 7  # the size-limit one of the fixture, these six
    paged: list[tuple[int, int]] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = (await world.admin.get(PATH, params=params)).body
        assert len(page["items"]) <= 2
        paged += [(i["partition"], i["offset"]) for i in page["items"]]
        if page["next"] is None:
            break
        params = {"limit": 2, "before": page["next"]}
    head = [(i["partition"], i["offset"]) for i in everything]
    assert paged[: len(head)] == head, "pages continue where the previous one stopped"

    # Filters: by reason text (case-insensitive) and by source topic.
    over = (await world.admin.get(PATH, params={"reason": f"{SMALL_LIMIT}-BYTE LIMIT"})).body["items"]
    assert [i["source_topic"] for i in over] == [world.names.request("high")]
    assert over[0]["key"] == world.big["data"]["user_id"]
    assert not [
        i
        for i in (await world.admin.get(PATH, params={"source_topic": topic})).body["items"]
        if i["key"] == world.big["data"]["user_id"]
    ]


async def test_a_record_still_bad_comes_back_with_its_reason_and_a_second_redrive_needs_force(world: World) -> None:
    topic = world.names.request("low")
    tag = unique("again")
    # Produced to a partition other than its key's: the copy goes back to the same partition.
    parts = list(range(world.settings.topic_partitions))
    by_key = DefaultPartitioner()(tag.encode(), parts, parts)
    producer = AIOKafkaProducer(bootstrap_servers=world.settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, b'{"specversion": "1.0", "id": 7}', key=tag.encode(), partition=(by_key + 1) % len(parts)
        )
    finally:
        await producer.stop()
    [original] = await _mine(world, 1, tag)
    assert original["source_partition"] == (by_key + 1) % len(parts)
    coords = {"partition": original["partition"], "offset": original["offset"]}

    reply = await world.admin.post(PATH + "/redrive", json={"records": [coords]})
    assert reply.status == 202, reply.body
    assert reply.body == {"redriven": 1, "skipped": []}

    # Nothing was fixed: the copy is dead-lettered again, with the reason, naming where it came from.
    where = f"{world.names.deadletter}/{coords['partition']}/{coords['offset']}"
    items = await _mine(world, 2, tag)
    [copy] = [i for i in items if i["redriven_from"] == where]
    assert copy["reason"] == original["reason"]
    assert copy["value_preview"] == original["value_preview"]
    assert (copy["source_topic"] == topic and copy["offset"] != original["offset"]) or copy["partition"] != original[
        "partition"
    ]
    assert copy["redriven"] is False
    assert copy["source_partition"] == original["source_partition"]
    [again] = [i for i in items if (i["partition"], i["offset"]) == (coords["partition"], coords["offset"])]
    assert again["redriven"] is True

    facts = await world.events.wait_events(1, type="deadletter.redriven", within=30)
    mine = [
        f
        for f in facts
        if f["data"]["deadletter_offset"] == coords["offset"]
        and f["data"]["deadletter_partition"] == coords["partition"]
    ]
    assert len(mine) == 1
    data = mine[0]["data"]
    assert data["operator"] == OPERATOR and data["source_topic"] == topic and data["forced"] is False
    assert data["reason"] == original["reason"] and data["source_offset"] == original["source_offset"]

    # The projector keeps the fact in its ledger (that is where `redriven` comes from), not as poison.
    assert world.stack.engine is not None
    async with world.stack.engine.connect() as conn:
        ledger = (await conn.execute(select(EventRow.type).where(EventRow.event_id == mine[0]["id"]))).all()
        poison = (await conn.execute(select(SkippedEventRow.event_id))).all()
    assert [r.type for r in ledger] == ["deadletter.redriven"] and poison == []

    reply = await world.admin.post(PATH + "/redrive", json={"records": [coords]})
    assert reply.body == {
        "redriven": 0,
        "skipped": [{**coords, "why": "already re-driven (set force to re-drive it again)"}],
    }
    reply = await world.admin.post(PATH + "/redrive", json={"records": [coords], "force": True})
    assert reply.body == {"redriven": 1, "skipped": []}
    forced = await world.events.wait(
        lambda: [
            f
            for f in world.events.events(type="deadletter.redriven")
            if f["data"]["forced"]
            and f["data"]["deadletter_offset"] == coords["offset"]
            and f["data"]["deadletter_partition"] == coords["partition"]
        ],
        what="the forced re-drive",
    )
    assert forced[0]["id"] != mine[0]["id"]
    await _mine(world, 3, tag)  # and a third dead letter: still bad


async def test_a_request_over_the_old_size_limit_is_delivered_once_redriven_after_the_fix(world: World) -> None:
    user = world.big["data"]["user_id"]
    client = UserClient(world.http, world.admin.base, world.settings, user)
    ws = await client.websocket()
    try:
        await ws.send_json({"type": "ping"})
        await next_frame(ws, "pong")
        reply = await world.admin.post(
            PATH + "/redrive",
            json={
                "filter": {
                    "reason": f"exceeds the {SMALL_LIMIT}-byte limit",
                    "source_topic": world.names.request("high"),
                }
            },
        )
        assert reply.status == 202 and reply.body == {"redriven": 1, "skipped": []}, reply.body
        frame = await next_frame(ws, "notification", timeout=30)
    finally:
        await ws.close()
    assert frame["notification"]["id"] == world.big["id"]
    assert frame["notification"]["body"] == "q" * 4000

    [fact] = await world.events.wait_events(1, type="deadletter.redriven", subject=world.big["id"])
    assert fact["userid"] == user and fact["data"]["request_id"] == world.big["id"]
    assert fact["data"]["operator"] == OPERATOR

    # The same filter again finds nothing left to re-drive.
    reply = await world.admin.post(
        PATH + "/redrive", json={"filter": {"reason": f"exceeds the {SMALL_LIMIT}-byte limit"}}
    )
    assert reply.body == {"redriven": 0, "skipped": []}

    # `herald why` (here its REST twin) tells the whole story, the re-drive included.
    async def explained() -> list[str] | None:
        reply = await world.admin.get(f"/api/notifications/{world.big['id']}/explain")
        texts = [s["text"] for s in reply.body.get("steps", [])] if reply.status == 200 else []
        return (
            texts if any("re-driven by ops-ana" in t for t in texts) and any("delivered" in t for t in texts) else None
        )

    steps = await eventually(explained, timeout=30, what="the explanation with the re-drive")
    assert any(f"exceeds the {SMALL_LIMIT}-byte limit" in t for t in steps), "and the dead letter it came from"


async def test_the_cli_lists_and_redrives_through_the_api_as_the_operator(world: World) -> None:
    topic = world.names.request("low")
    tag = unique("cli")
    await publish(world.settings.kafka_bootstrap, topic, [(tag.encode(), b"{cli poison")])
    [letter] = await _mine(world, 1, tag)
    where = f"{letter['partition']}:{letter['offset']}"
    api = ("--api", world.admin.base, "--operator", "ops-cli")

    listed = await herald(world.settings, "deadletters", "list", "--source-topic", topic, "--limit", "200", *api)
    assert listed.status == 0, listed.stderr
    [line] = [x for x in listed.stdout.splitlines() if x.startswith(where + " ")]
    assert f"{topic}/{letter['source_partition']}/{letter['source_offset']}" in line and letter["reason"] in line

    done = await herald(world.settings, "deadletters", "redrive", where, *api)
    assert (done.status, done.stdout) == (0, "re-drove 1\n"), done.stderr
    mine = await world.events.wait(
        lambda: [
            f["data"]["operator"]
            for f in world.events.events(type="deadletter.redriven")
            if (f["data"]["deadletter_partition"], f["data"]["deadletter_offset"])
            == (letter["partition"], letter["offset"])
        ],
        what="the CLI's re-drive in the log",
    )
    assert mine == ["ops-cli"]
    again = await herald(world.settings, "deadletters", "redrive", where, *api)
    assert again.stdout == f"skipped {where}: already re-driven (set force to re-drive it again)\nre-drove 0\n"

    user_token = world.user.token
    refused = await herald(world.settings, "deadletters", "list", "--api", world.admin.base, "--token", user_token)
    assert refused.status == 1 and "403" in refused.stderr


async def test_a_filter_that_runs_out_of_budget_ends_the_page_early_and_next_goes_on_without_a_gap(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic, other = world.names.request("medium"), world.names.request("low")
    tag = unique("budget")
    # A few matches (by source topic) among records that do not match, on several partitions.
    for i in range(12):
        await publish(world.settings.kafka_bootstrap, topic if i % 3 == 0 else other, [(f"{tag}-{i}".encode(), b"[")])
    await _mine(world, 12, tag)
    full = (await world.admin.get(PATH, params={"limit": 200, "source_topic": topic})).body["items"]
    assert len([i for i in full if (i["key"] or "").startswith(tag)]) == 4
    everything = [(i["partition"], i["offset"]) for i in full]

    monkeypatch.setattr(deadletters, "FILTER_CHUNK", 1)
    monkeypatch.setattr(deadletters, "SCAN_BUDGET", 2)  # one round of 3 records per partition and request
    seen: list[tuple[int, int]] = []
    pages = 0
    short = 0
    params: dict[str, Any] = {"limit": 3, "source_topic": topic}
    while True:
        page = (await world.admin.get(PATH, params=params)).body
        pages += 1
        seen += [(i["partition"], i["offset"]) for i in page["items"]]
        if page["next"] is None:
            break
        short += len(page["items"]) < 3
        params = {**params, "before": page["next"]}
        assert pages < 500
    assert short > 0, "the budget ended pages early"
    assert seen == everything, "page by page, the same records in the same order, none twice"
