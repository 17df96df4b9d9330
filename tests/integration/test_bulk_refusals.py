"""Targets a bulk send refuses before publishing are recorded in the log and shown to operators.

``POST /api/notifications/bulk`` refuses an unknown device token without publishing a
request for it; the refusal is appended as ``bulk.target_refused``, so the console's bulk
page (``GET /api/admin/bulks/{id}``) lists it with its reason and ``herald why`` explains
it, from the log. A whole stack (worker, projector, API) on its own database.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from api.auth import SCOPE_ADMIN, SCOPE_WRITE
from engine.settings import Settings
from herald.stack import Stack, run_stack
from tests.integration.audit_support import herald
from tests.support.api import Api, isolated_settings, own_database, unique
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
async def served(kafka_bootstrap: str, redis_url: str) -> AsyncIterator[tuple[Stack, Settings]]:
    with own_database("herald_bulk_refusals") as url:
        settings = isolated_settings(kafka_bootstrap, url, redis_url)
        async with run_stack(settings) as stack:
            yield stack, settings


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_a_refused_device_token_is_listed_on_the_bulk_page_and_explained(
    served: tuple[Stack, Settings], http: aiohttp.ClientSession
) -> None:
    stack, settings = served
    base = f"http://127.0.0.1:{stack.http_port}"
    owners = [unique("ida"), unique("jon")]
    good = [secrets.token_hex(32) for _ in owners]
    for user, token in zip(owners, good, strict=True):
        registered = await Api.for_user(http, base, settings, user).post("/api/devices", json={"device_token": token})
        assert registered.status in (200, 201, 202), registered.body
    sender = unique("svc")
    svc = Api.for_user(http, base, settings, sender, SCOPE_WRITE)
    ops = Api.for_user(http, base, settings, unique("ops"), SCOPE_ADMIN)

    async def owners_known() -> bool:  # the bulk resolves tokens through the read model
        for user, token in zip(owners, good, strict=True):
            found = await Api.for_user(http, base, settings, user).get("/api/devices")
            if token not in {d["device_token"] for d in found.body["results"]}:
                return False
        return True

    await eventually(owners_known, timeout=60, what="both devices projected")
    unknown = secrets.token_hex(32)
    reply = await svc.post(
        "/api/notifications/bulk", json={"device_tokens": [good[0], unknown, good[1]], "title": "Sale"}
    )
    assert reply.status == 202, reply.body
    bulk_id = reply.body["bulk_id"]
    assert reply.body["requested"] == 2
    [answered] = reply.body["refused"]
    assert (answered["target"], answered["reason"]) == (unknown, "unknown device token")
    nid = answered["notification_id"]

    async def whole_bulk() -> dict[str, Any] | None:
        found = await ops.get(f"/api/admin/bulks/{bulk_id}")
        return found.body if found.status == 200 and found.body["total"] == 3 else None

    detail = await eventually(whole_bulk, timeout=90, what="the bulk's two requests and its refusal projected")
    assert detail["refused_total"] == 1
    assert detail["by_status"]["rejected"] == 1
    assert detail["refused"] == [
        {
            "notification_id": nid,
            "target": unknown,
            "user_id": None,
            "status": "rejected",
            "reason": "unknown device token",
        }
    ]
    # The producer's own progress view counts it too; the two good tokens were published.
    progress = await svc.get(f"/api/notifications/bulk/{bulk_id}")
    assert progress.body["projected"] == 3 and progress.body["by_status"]["rejected"] == 1
    listed = (await ops.get("/api/admin/bulks", params={"limit": "200"})).body["items"]
    assert [(b["total"], b["refused"]) for b in listed if b["bulk_id"] == bulk_id] == [(3, 1)]
    # The owners of the good tokens got their notification; neither inbox shows the refusal.
    for user in owners:
        inbox = await Api.for_user(http, base, settings, user).get("/api/notifications", params={"bulk_id": bulk_id})
        assert len(inbox.body["results"]) == 1 and inbox.body["results"][0]["id"] != nid

    why = await herald(settings, "why", nid)
    assert why.status == 0, why.stderr
    assert "decision: not accepted: refused by the API before publishing: unknown device token" in why.stdout
    assert f"device_token {unknown[:8]}...{unknown[-4:]}, bulk {bulk_id} sent by {sender}" in why.stdout
    assert "no request was published for it" in why.stdout


async def test_a_retried_bulk_records_its_refusals_once(
    served: tuple[Stack, Settings], http: aiohttp.ClientSession
) -> None:
    stack, settings = served
    base = f"http://127.0.0.1:{stack.http_port}"
    svc = Api.for_user(http, base, settings, unique("svc"), SCOPE_WRITE)
    ops = Api.for_user(http, base, settings, unique("ops"), SCOPE_ADMIN)
    tokens = [secrets.token_hex(32) for _ in range(2)]
    body = {"device_tokens": tokens, "title": "Retry me"}
    first = await svc.post("/api/notifications/bulk", json=body, headers={"Idempotency-Key": "retry-1"})
    again = await svc.post("/api/notifications/bulk", json=body, headers={"Idempotency-Key": "retry-1"})
    assert first.status == again.status == 202
    assert first.body == again.body and first.body["requested"] == 0
    bulk_id = first.body["bulk_id"]

    async def projected() -> dict[str, Any] | None:
        found = await ops.get(f"/api/admin/bulks/{bulk_id}")
        return found.body if found.status == 200 and found.body["total"] >= 2 else None

    detail = await eventually(projected, timeout=60, what="the refusals projected")
    assert detail["by_status"] == {"rejected": 2}
    assert sorted(r["target"] for r in detail["refused"]) == sorted(tokens)
    # A user id no request can carry is refused by itself, and listed with (the start of) its id.
    named = [unique("kim"), "x" * 300]
    users = await svc.post("/api/notifications/bulk", json={"user_ids": named, "title": "Hi"})
    assert users.status == 202 and users.body["requested"] == 1
    [overlong] = users.body["refused"]
    assert overlong["target"] == named[1] and "200 characters" in overlong["reason"]

    async def users_projected() -> dict[str, Any] | None:
        found = await ops.get(f"/api/admin/bulks/{users.body['bulk_id']}")
        return found.body if found.status == 200 and found.body["total"] == 2 else None

    listed = (await eventually(users_projected, timeout=60, what="the user bulk projected"))["refused"]
    assert [(r["target"], r["user_id"], r["reason"]) for r in listed] == [("x" * 200, None, overlong["reason"])]
    # Bad content is refused once as a whole (422), never recorded target by target.
    bad = await svc.post("/api/notifications/bulk", json={"device_tokens": tokens, "title": ""})
    assert bad.status == 422, bad.body
    # A user token reaches only its own devices: it cannot make the log record a flood of refusals.
    user = Api.for_user(http, base, settings, unique("amy"))
    flood = [secrets.token_hex(32) for _ in range(settings.max_devices_per_user + 1)]
    too_many = await user.post("/api/notifications/bulk", json={"device_tokens": flood, "title": "spam"})
    assert too_many.status == 413, too_many.body
    assert "at most" in too_many.body["detail"]
    few = await user.post("/api/notifications/bulk", json={"device_tokens": flood[:2], "title": "mine?"})
    assert few.status == 202 and [r["reason"] for r in few.body["refused"]] == ["unknown device token"] * 2
