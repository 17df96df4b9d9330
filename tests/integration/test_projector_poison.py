"""Poison events in the log: skipped one by one, recorded with their offset, counted; the rest flows.

A live projector (real broker, real Postgres) reads a log in which events it cannot apply
sit between good ones. Every good event is projected; every bad one is listed in
``skipped_events`` at its offset, counted in ``herald_projector_skipped_events_total`` and
logged; the projector keeps running.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from engine.settings import Settings
from engine.topics import TopicNames
from herald.stack import run_stack
from projections.database import create_engine
from projections.models import SkippedEventRow
from projections.queries import NotificationQueries
from schemas.codec import encode
from streams.admin import ensure_topics
from tests.support.event_log import Log, append
from tests.support.kafka import publish
from tests.support.log_reader import read_topic
from tests.support.waiting import eventually


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": True}
    for _ in range(depth):
        value = {"d": value}
    return value


def skipped_count(stage: str) -> float:
    return REGISTRY.get_sample_value("herald_projector_skipped_events_total", {"stage": stage}) or 0.0


async def skipped_rows(settings: Settings) -> list[dict[str, Any]]:
    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(select(SkippedEventRow).order_by(SkippedEventRow.offset))
            return [dict(r._mapping) for r in rows]
    finally:
        await engine.dispose()


async def test_deep_data_and_an_undecodable_event_do_not_stop_the_projector(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    await ensure_topics(settings)
    topic = TopicNames(settings.topic_prefix).events
    log = Log(seed="poison")
    first = log.accepted("alice", title="first")
    # Accepted at the edge before depth limits existed: 500 levels of data, a 4 KB body.
    deep = log.accepted("alice", title="deep", data=nested(500))
    await append(settings.kafka_bootstrap, topic, log.envelopes)
    before = skipped_count("decode")
    async with run_stack(settings, worker=False, api=False, projector=True) as stack:
        assert stack.engine is not None
        queries = NotificationQueries(stack.engine)
        await eventually(lambda: queries.get("alice", deep), timeout=30, what="the deep notification projected")

        # The next event of the deep notification used to deep-copy its state (RecursionError);
        # then a record nested beyond what any JSON decoder here accepts, between good events.
        log.succeeded("alice", deep, latency_ms=50.0)
        await append(settings.kafka_bootstrap, topic, log.envelopes[-1:])
        log.accepted("alice", title="poison", data={"d": "here"})
        poison = encode(log.envelopes[-1]).replace(b'"here"', b'{"d":' * 3000 + b"1" + b"}" * 3000)
        raw: list[tuple[bytes | None, bytes | None]] = [(b"alice", poison)]
        await publish(settings.kafka_bootstrap, topic, raw)
        after = log.accepted("alice", title="after the poison")
        log.succeeded("alice", first, latency_ms=20.0)
        await append(settings.kafka_bootstrap, topic, log.envelopes[-2:])

        async def flowing() -> bool:
            late = await queries.get("alice", after)
            deep_now = await queries.get("alice", deep) or {}
            first_now = await queries.get("alice", first) or {}
            return late is not None and deep_now.get("status") == first_now.get("status") == "delivered"

        with caplog.at_level(logging.ERROR, logger="projections.poison"):
            await eventually(flowing, timeout=30, what="the events around the poison projected")
            rows = await eventually(lambda: skipped_rows(settings), timeout=10, what="the poison recorded")
        assert stack.projector is not None and stack.projector.skipped == 1

    records = await read_topic(settings.kafka_bootstrap, topic, until=6)
    (bad,) = [r for r in records if r.value == poison]
    assert [(r["topic"], r["partition"], r["offset"]) for r in rows] == [(topic, bad.partition, bad.offset)]
    assert "RecursionError" in rows[0]["reason"]
    assert skipped_count("decode") == before + 1
    assert any(r.levelno == logging.ERROR and getattr(r, "offset", None) == bad.offset for r in caplog.records)
