"""Stats over the API against a known event sequence on the real broker and Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from api.auth import SCOPE_ADMIN
from engine.settings import Settings
from engine.topics import TopicNames
from herald.stack import Stack, run_stack
from tests.support.api import Api, isolated_settings, own_database, unique
from tests.support.event_log import Log, append
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
async def stats_stack(kafka_bootstrap: str, redis_url: str) -> AsyncIterator[tuple[Stack, Settings]]:
    with own_database() as url:
        settings = isolated_settings(kafka_bootstrap, url, redis_url)
        # No worker: the event log holds exactly the sequence the test writes.
        async with run_stack(settings, worker=False) as stack:
            yield stack, settings


async def test_stats_match_a_known_event_sequence(stats_stack, kafka_bootstrap: str) -> None:  # type: ignore[no-untyped-def]
    stack, settings = stats_stack
    ana, ben = unique("ana"), unique("ben")
    log = Log()
    n = [
        log.accepted(ana, priority=p, channels=c)
        for p, c in (
            ("high", ("websocket",)),
            ("high", ("websocket", "email")),
            ("medium", ("email",)),
            ("low", ("websocket",)),
            ("low", ("apns",)),
        )
    ]
    other = log.accepted(ben, priority="high")
    for i, latency in enumerate((40.0, 80.0, 120.0)):
        log.succeeded(ana, n[i], "websocket" if i < 2 else "email", latency_ms=latency)
    log.deferred(ana, n[3])
    log.failed(ana, n[4], "apns", attempt=1, retriable=False)
    log.read(ana, n[0])
    log.read(ana, n[1])
    log.deleted(ana, n[1])
    log.succeeded(ben, other, latency_ms=1000.0)
    log.rate_limited(ana, "low")
    await append(kafka_bootstrap, TopicNames(settings.topic_prefix).events, log.envelopes)

    async with aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{stack.http_port}"
        api = Api.for_user(http, base, settings, ana)

        async def complete() -> dict[str, object] | None:
            body = (await api.get("/api/notifications/stats")).body
            return body if body["by_status"]["rate_limited"] == 1 else None

        stats = await eventually(complete, what="the whole sequence projected")
        assert stats["scope"] == "user"
        assert stats["user_id"] == ana
        assert stats["total"] == 5  # 5 accepted + 1 rate limited - 1 deleted
        assert stats["unread"] == 4  # n[2], n[3], n[4] and the rate-limited request
        assert stats["by_status"] == {
            "pending": 1,
            "delivered": 2,
            "failed": 1,
            "expired": 0,
            "cancelled": 0,
            "rejected": 0,
            "rate_limited": 1,
            "duplicate": 0,
        }
        assert stats["by_priority"] == {"high": 1, "medium": 1, "low": 3}
        assert stats["by_channel"] == {
            "websocket": {"delivered": 1, "deferred": 1},
            "email": {"delivered": 1},
            "apns": {"failed": 1},
        }
        latency = stats["delivery_latency_ms"]
        assert latency["count"] == 3  # deliveries count even when the notification was deleted later
        assert latency["p50"] == pytest.approx(80, rel=0.025)
        assert latency["p90"] == pytest.approx(120, rel=0.025)

        admin = Api.for_user(http, base, settings, "ops", SCOPE_ADMIN)
        assert (await admin.get(f"/api/notifications/stats?user_id={ana}")).body == stats
        everyone = (await admin.get("/api/notifications/stats?global=true")).body
        assert everyone["scope"] == "global"
        assert everyone["total"] == 6
        assert everyone["by_priority"]["high"] == 2
        assert everyone["delivery_latency_ms"]["count"] == 4
        assert everyone["delivery_latency_ms"]["p99"] == pytest.approx(1000, rel=0.025)
