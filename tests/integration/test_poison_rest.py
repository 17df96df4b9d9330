"""Poison over REST on the whole stack: refused with problem+json (never a 5xx), and the
read models keep working for everyone afterwards.

Before the fix a 1 KB body nested 600 deep was accepted (202) and its next event stopped
the projector for every user; a body just under the size limit was accepted and then
dead-lettered by ingest (its envelope was larger than the limit).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings

from api.auth import SCOPE_WRITE
from engine.settings import Settings
from herald.stack import Stack, run_stack
from schemas.limits import MAX_ID_LENGTH
from tests.support.api import Api, isolated_settings, own_database, unique
from tests.support.hostile_json import hostile_document
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
async def api_stack(kafka_bootstrap: str, redis_url: str) -> AsyncIterator[tuple[Stack, Settings]]:
    with own_database("herald_poison") as url:
        settings = isolated_settings(kafka_bootstrap, url, redis_url)
        async with run_stack(settings) as stack:
            yield stack, settings


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def client(api_stack: tuple[Stack, Settings], http: aiohttp.ClientSession, user: str, *scopes: str) -> Api:
    stack, settings = api_stack
    return Api.for_user(http, f"http://127.0.0.1:{stack.http_port}", settings, user, *scopes)


async def raw_call(api: Api, method: str, path: str, body: bytes) -> tuple[int, str, Any]:
    headers = {"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"}
    async with api.session.request(method, api.base + path, data=body, headers=headers) as resp:
        text = await resp.text()
        return resp.status, resp.content_type, json.loads(text) if text else None


async def projected(api: Api, nid: str) -> bool:
    return (await api.get(f"/api/notifications/{nid}")).status == 200


async def test_a_1kb_body_nested_600_deep_is_422_and_projection_goes_on(
    api_stack: tuple[Stack, Settings], http: aiohttp.ClientSession
) -> None:
    api = client(api_stack, http, unique("deep"))
    body = b'{"title":"deep","data":{"x":' + b"[" * 600 + b"]" * 600 + b"}}"
    assert 1000 < len(body) < 1300
    status, content_type, problem = await raw_call(api, "POST", "/api/notifications", body)
    assert (status, content_type) == (422, PROBLEM), problem
    assert "nested deeper than 32 levels" in problem["detail"]
    # A notification in the same user's history after it is sent, projected and updated.
    after = await api.post("/api/notifications", json={"title": "after the poison"})
    assert after.status == 202, after.body
    nid = after.body["id"]
    await eventually(lambda: projected(api, nid), what="the next notification projected")
    assert (await api.patch(f"/api/notifications/{nid}/read")).status == 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"title":"t","badge":NaN}', "NaN"),
        (b'{"title":"t","data":{"n":1e999}}', "out of range"),
        (b'{"title":"t","title":"u"}', "duplicate key"),
        (b'{"title":"t\\ud800"}', "lone surrogate"),
    ],
)
async def test_json_herald_cannot_keep_is_422(
    api_stack: tuple[Stack, Settings], http: aiohttp.ClientSession, body: bytes, fragment: str
) -> None:
    api = client(api_stack, http, unique("odd"))
    status, content_type, problem = await raw_call(api, "POST", "/api/notifications", body)
    assert (status, content_type) == (422, PROBLEM), problem
    assert fragment in problem["detail"]


async def test_identifiers_over_the_storage_length_are_refused_never_truncated(
    api_stack: tuple[Stack, Settings], http: aiohttp.ClientSession
) -> None:
    sender = client(api_stack, http, unique("sender"), SCOPE_WRITE)
    long_id = "u" * (MAX_ID_LENGTH + 1)
    reply = await sender.post("/api/notifications", json={"title": "t", "user_id": long_id})
    assert (reply.status, reply.content_type) == (422, PROBLEM)
    assert "user_id" in reply.body["detail"]
    reply = await sender.post("/api/notifications", json={"title": "t"}, headers={"Idempotency-Key": long_id})
    assert (reply.status, reply.content_type) == (400, PROBLEM)
    reply = await sender.post("/api/notifications", json={"title": "t", "collapse_key": "c" * 65})
    assert (reply.status, reply.content_type) == (422, PROBLEM)
    assert (await sender.get(f"/api/notifications/{long_id}")).status == 404
    assert (await sender.get("/api/notifications", params={"user_id": long_id})).status == 400
    # At the limit everything works, and the id is kept whole.
    fits = "f" * MAX_ID_LENGTH
    reply = await sender.post("/api/notifications", json={"title": "t", "user_id": fits})
    assert reply.status == 202, reply.body
    assert reply.body["user_id"] == fits


async def test_a_body_whose_envelope_exceeds_the_record_limit_is_413_not_accepted_then_lost(
    api_stack: tuple[Stack, Settings], http: aiohttp.ClientSession
) -> None:
    _, settings_ = api_stack
    api = client(api_stack, http, unique("big"))
    body = {"title": "big", "data": {"blob": "x" * (settings_.max_request_bytes - 200)}}
    assert len(json.dumps(body)) < settings_.max_request_bytes
    reply = await api.post("/api/notifications", json=body)
    assert (reply.status, reply.content_type) == (413, PROBLEM), reply.body
    assert "encodes to" in reply.body["detail"]


def _corpus(shape: dict[str, Any], count: int) -> list[bytes]:
    """``count`` hostile variants of ``shape`` drawn by Hypothesis (fixed seed: reproducible)."""
    drawn: list[bytes] = []

    @settings(
        max_examples=count, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(doc=hostile_document(shape, inner=""))
    def collect(doc: bytes) -> None:
        drawn.append(doc)

    collect()
    return drawn


ROUTES: list[tuple[str, str, dict[str, Any], int]] = [
    ("POST", "/api/notifications", {"title": "fuzz", "body": "b", "data": {"k": 1}}, 60),
    ("POST", "/api/devices", {"device_token": "d" * 64, "name": "phone"}, 25),
    ("PUT", "/api/users/{user}/contact", {"email": "fuzz@example.test"}, 25),
    ("POST", "/api/notifications/bulk", {"title": "fuzz", "user_ids": ["a", "b"]}, 25),
]
# Drawn at import, before any stack runs: Hypothesis refuses to draw while other threads
# (the Kafka clients') touch the global random state.
CORPORA = [_corpus(shape, count) for _, _, shape, count in ROUTES]


async def test_hostile_bodies_on_every_body_route_get_no_5xx_and_problem_json(
    api_stack: tuple[Stack, Settings], http: aiohttp.ClientSession
) -> None:
    user = unique("fuzz")
    api = client(api_stack, http, user, SCOPE_WRITE)
    statuses: dict[int, int] = {}
    for (method, path, _, _), corpus in zip(ROUTES, CORPORA, strict=True):
        for body in corpus:
            status, content_type, answer = await raw_call(api, method, path.format(user=user), body)
            statuses[status] = statuses.get(status, 0) + 1
            assert status < 500, (path, body[:200], answer)
            if status >= 400:
                assert content_type == PROBLEM, (path, body[:200], content_type)
                assert answer["detail"] or answer["title"]
    assert any(s >= 400 for s in statuses), statuses
    # The stack still serves and projects after the barrage.
    after = await api.post("/api/notifications", json={"title": "still here"})
    assert after.status == 202, after.body
    await eventually(lambda: projected(api, after.body["id"]), what="a notification projected after the fuzzing")
