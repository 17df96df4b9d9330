"""Ingest state survives a worker restart: idempotency keys and rate-limit windows.

A "restart" stops the worker's Faust app and starts a new one with the same
settings (same application id): its tables are rebuilt from their changelog topics.
"""

from __future__ import annotations

import json

import pytest

from herald.stack import run_stack
from tests.integration.stream_core_support import ScriptedEmailSink, core_settings
from tests.support.kafka import publish, request
from tests.support.log_reader import TopicTail

pytestmark = pytest.mark.slow


async def test_idempotency_and_rate_limits_hold_across_a_worker_restart(kafka_bootstrap: str, redis_url: str) -> None:
    settings = core_settings(kafka_bootstrap, redis_url)
    sink = ScriptedEmailSink()
    first = request("ursula", "Your invoice", channels=["email"], idempotency_key="invoice-42")
    again = request("ursula", "Your invoice (resent)", channels=["email"], idempotency_key="invoice-42")
    chatty = [request("rita", f"low {i}") for i in range(25)]
    high, low = "requests.high", "requests.low"

    async with run_stack(settings, worker=True, projector=False, api=False, sinks=[sink]) as stack:
        assert stack.topics is not None
        log = TopicTail(kafka_bootstrap, stack.topics.names.events)
        await log.start()
        try:
            await publish(kafka_bootstrap, settings.topic_prefix + high, [(b"ursula", json.dumps(first).encode())])
            await publish(
                kafka_bootstrap, settings.topic_prefix + low, [(b"rita", json.dumps(r).encode()) for r in chatty[:12]]
            )
            await log.wait_events(1, type="delivery.succeeded", subject=first["id"])
            await log.wait_events(12, type="notification.accepted", userid="rita")
        except BaseException:
            await log.stop()
            raise

    try:
        async with run_stack(settings, worker=True, projector=False, api=False, sinks=[sink]):
            # The same key with a new id, and the very same request (same id) published again.
            await publish(
                kafka_bootstrap,
                settings.topic_prefix + high,
                [(b"ursula", json.dumps(again).encode()), (b"ursula", json.dumps(first).encode())],
            )
            await publish(
                kafka_bootstrap, settings.topic_prefix + low, [(b"rita", json.dumps(r).encode()) for r in chatty[12:]]
            )
            duplicates = await log.wait_events(2, type="notification.duplicate", userid="ursula")
            await log.wait(
                lambda: (
                    len(log.events(type="notification.accepted", userid="rita"))
                    + len(log.events(type="notification.rate_limited", userid="rita"))
                    >= 25
                ),
                what="rita's 25 outcomes",
            )
    finally:
        await log.stop()

    assert {(d["data"]["notification_id"], d["data"]["original_id"]) for d in duplicates} == {
        (again["id"], first["id"]),
        (first["id"], first["id"]),
    }
    assert all(d["data"]["idempotency_key"] == "invoice-42" for d in duplicates)
    assert [e["subject"] for e in log.events(type="notification.accepted", userid="ursula")] == [first["id"]]
    assert len(sink.sent) == 1
    assert sink.sent[0].notification_id == first["id"]
    accepted = log.events(type="notification.accepted", userid="rita")
    limited = log.events(type="notification.rate_limited", userid="rita")
    assert (len(accepted), len(limited)) == (20, 5)
    assert {e["subject"] for e in limited} == {r["id"] for r in chatty[20:]}
