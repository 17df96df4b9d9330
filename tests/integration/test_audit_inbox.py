"""``herald inbox U --as-of T`` equals the live read model as it was at T, at instants captured
while real traffic (REST sends, a WebSocket replay, reads, a delete) went through the stack."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import psycopg
import pytest

from engine.settings import Settings
from herald.stack import run_stack
from tests.integration.audit_support import end_offsets, herald
from tests.support.api import Api, isolated_settings, own_database
from tests.support.clients import missed_notifications
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
USER = "ivy"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _read_model(url: str, user: str) -> dict[str, Any]:
    """The user's rows in the live read model, shaped like ``herald inbox --json``."""
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        rows = conn.execute(
            "SELECT id, status, read_at, deleted_at, delivered_at, attempts, error FROM notifications"
            " WHERE user_id = %s",
            (user,),
        ).fetchall()
        channels = conn.execute(
            "SELECT c.notification_id, c.channel, c.state, c.attempts, c.target, c.provider_id, c.error,"
            " c.delivered_at FROM notification_channels c JOIN notifications n ON n.id = c.notification_id"
            " WHERE n.user_id = %s",
            (user,),
        ).fetchall()
    out: dict[str, Any] = {}
    for nid, status, read_at, deleted_at, delivered_at, attempts, error in rows:
        out[nid] = {
            "status": status,
            "read_at": _iso(read_at),
            "deleted_at": _iso(deleted_at),
            "delivered_at": _iso(delivered_at),
            "attempts": attempts,
            "error": error,
            "channels": {},
        }
    for nid, channel, state, attempts, target, provider_id, error, delivered_at in channels:
        out[nid]["channels"][channel] = {
            "state": state,
            "attempts": attempts,
            "target": target,
            "provider_id": provider_id,
            "error": error,
            "delivered_at": _iso(delivered_at),
        }
    return out


def _folded(body: dict[str, Any]) -> dict[str, Any]:
    keep = ("status", "read_at", "deleted_at", "delivered_at", "attempts", "error", "channels")
    return {item["id"]: {k: item[k] for k in keep} for item in body["notifications"]}


async def _caught_up(settings: Settings, url: str) -> None:
    """Until the projector has applied every event of the log."""
    topic = f"{settings.topic_prefix}events"

    async def done() -> bool:
        ends = await end_offsets(settings, [topic])
        with psycopg.connect(url.replace("+psycopg", "")) as conn:
            stored: dict[int, int] = dict(
                conn.execute("SELECT partition, next_offset FROM projector_offsets WHERE topic = %s", (topic,))
            )
        return all(stored.get(p, 0) >= end for (_, p), end in ends.items())

    await eventually(done, timeout=30, what="the projector caught up")


def _after(instant: datetime) -> Callable[[], Awaitable[bool]]:
    async def later() -> bool:
        return datetime.now(UTC) > instant

    return later


async def _capture(settings: Settings, url: str) -> tuple[str, dict[str, Any]]:
    """An instant T at which the read model is complete, and the read model then."""
    await _caught_up(settings, url)
    now = datetime.now(UTC)
    t = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    snapshot = _read_model(url, USER)
    await _caught_up(settings, url)  # nothing arrived meanwhile
    # The next event must carry a later millisecond than T.
    await eventually(_after(now), timeout=1, interval=0.001, what="the next millisecond")
    return t, snapshot


async def test_inbox_as_of_matches_the_read_model_at_captured_instants(kafka_bootstrap: str, redis_url: str) -> None:
    with own_database("herald_inbox") as url:
        settings = isolated_settings(kafka_bootstrap, url, redis_url)
        captured: list[tuple[str, dict[str, Any]]] = []
        async with run_stack(settings) as stack, aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{stack.http_port}"
            ivy = Api.for_user(http, base, settings, USER)
            other = Api.for_user(http, base, settings, "someone-else")
            first = (await ivy.post("/api/notifications", json={"title": "one"})).body["id"]
            second = (await ivy.post("/api/notifications", json={"title": "two", "priority": "high"})).body["id"]
            await other.post("/api/notifications", json={"title": "not ivy's"})
            captured.append(await _capture(settings, url))

            ws = await http.ws_connect(base.replace("http", "ws") + f"/ws/notifications?token={ivy.token}")
            assert {n["id"] for n in await missed_notifications(ws)} == {first, second}
            await ws.close()
            assert (await ivy.patch(f"/api/notifications/{first}/read")).status == 200
            captured.append(await _capture(settings, url))

            assert (await ivy.delete(f"/api/notifications/{second}")).status == 204
            await ivy.post("/api/notifications", json={"title": "three", "channels": ["websocket", "email"]})
            captured.append(await _capture(settings, url))

        for t, snapshot in captured:
            result = await herald(settings, "inbox", USER, "--as-of", t, "--json")
            assert result.status == 0, result.stderr
            assert _folded(json.loads(result.stdout)) == snapshot, t
        assert [len(s) for _, s in captured] == [2, 2, 3]
        assert captured[0][1][first]["channels"]["websocket"]["state"] == "deferred"
        assert captured[1][1][first]["channels"]["websocket"]["state"] == "delivered"
        assert captured[1][1][first]["read_at"] is not None

        text = await herald(settings, "inbox", USER, "--as-of", captured[1][0])
        assert text.status == 0
        assert f"inbox of {USER} as of {captured[1][0]}: 2 notification(s), 1 unread" in text.stdout
        before = await herald(settings, "inbox", USER, "--as-of", "2000-01-01T00:00:00Z")
        assert before.status == 1
        assert before.stderr.strip().splitlines()[-1] == (
            f"herald inbox: no events for user {USER} at or before 2000-01-01T00:00:00Z"
        )
        bad = await herald(settings, "inbox", USER, "--as-of", "noon")
        assert bad.status == 2 and "neither an RFC 3339 time" in bad.stderr
