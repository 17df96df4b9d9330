"""Why a notification ended as it did, from the log: ``GET /api/notifications/{id}/explain``
and ``herald why``.

The records come from Kafka, never from the read models' content. The read models only
say where to look: the ledger's partition and offset of each of the notification's
events (``NotificationQueries.events``) and how far the projector got
(``projected_offset``). Those offsets are read directly, the log after the projector's
position is scanned (events not projected yet), and so is the dead-letter topic (a
request that never parsed has no row anywhere). Without a database, the whole log is
scanned. Access: the owning user, or a token with the ``admin`` scope; anyone else gets
404, exactly like an unknown id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy.exc import SQLAlchemyError

from api.auth import SCOPE_ADMIN, TokenVerifier
from api.problems import Problem
from api.rest.params import path_id
from engine.explain import DEADLETTER, Explanation, Fact, concerns, explain
from engine.settings import Settings
from engine.topics import TopicNames
from schemas.errors import HeraldError

log = logging.getLogger(__name__)

CLUSTER_GAP = 500
"""Known offsets closer than this are read as one contiguous range (one fetch, not many)."""
INVALIDATION_LOOKBACK = 500
"""Records before a failed APNs attempt searched for its ``device.invalidated`` (same partition)."""
CONNECT_TIMEOUT_SECONDS = 10.0
"""How long to try to reach the broker before saying it is unreachable."""
FETCH_BYTES = 8 * 1024 * 1024
"""Bytes per partition per fetch: a scan is bound by round trips, so fewer, larger fetches."""
IDLE_POLLS = 50
"""Empty polls in a row (200 ms each) before a range short of its end is an error."""


class LogUnreachable(HeraldError):
    """The broker cannot be reached (or lost) while explaining."""

    retriable = True


class Locator(Protocol):
    """Where the read models say a notification's events are (``NotificationQueries``)."""

    async def events(self, notification_id: str) -> list[dict[str, Any]]: ...
    async def projected_offset(self, topic: str, partition: int) -> int: ...


async def explain_notification(
    settings: Settings,
    notification_id: str,
    locator: Locator | None,
    *,
    progress: Callable[[int], None] | None = None,
) -> Explanation | None:
    """The explanation of ``notification_id``, or ``None`` when no record mentions it."""
    facts = await gather(settings, notification_id, locator, progress=progress)
    return explain(notification_id, facts) if facts else None


async def gather(
    settings: Settings,
    notification_id: str,
    locator: Locator | None,
    *,
    progress: Callable[[int], None] | None = None,
) -> list[Fact]:
    """Every record of the event log and the dead-letter topic about ``notification_id``."""
    names = TopicNames(settings.topic_prefix)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_partition_fetch_bytes=FETCH_BYTES,
        request_timeout_ms=int(CONNECT_TIMEOUT_SECONDS * 1000),
    )
    try:
        await asyncio.wait_for(consumer.start(), CONNECT_TIMEOUT_SECONDS)
    except (KafkaError, OSError, TimeoutError) as exc:
        await consumer.stop()
        raise LogUnreachable(
            f"cannot reach the Kafka broker at {settings.kafka_bootstrap} ({type(exc).__name__})"
        ) from None
    try:
        reader = _Reader(consumer, notification_id, progress)
        try:
            return await reader.gather(names, locator)
        except KafkaError as exc:
            raise LogUnreachable(f"reading the log failed: {type(exc).__name__}: {exc}") from None
    finally:
        await consumer.stop()


class _Reader:
    def __init__(self, consumer: AIOKafkaConsumer, nid: str, progress: Callable[[int], None] | None) -> None:
        self._consumer = consumer
        self._nid = nid
        self._needle = nid.encode()
        self._progress = progress
        self._seen: dict[tuple[str, int, int], Fact] = {}

    async def gather(self, names: TopicNames, locator: Locator | None) -> list[Fact]:
        await self._consumer.topics()
        events = sorted(self._consumer.partitions_for_topic(names.events) or ())
        # Read now: once partitions are assigned, the consumer's metadata covers only those
        # topics, and the dead-letter topic would look absent (its records silently left out).
        letters = sorted(self._consumer.partitions_for_topic(names.deadletter) or ())
        if not events:
            raise LogUnreachable(f"topic {names.events} does not exist (wrong HERALD_TOPIC_PREFIX?)")
        tps = [TopicPartition(names.events, p) for p in events]
        ends = await self._consumer.end_offsets(tps)
        known, projected = await _hints(locator, self._nid, names.events, events)
        for tp in tps:
            offsets = sorted(o for p, o in known if p == tp.partition and o < ends[tp])
            for low, high in _clusters(offsets):
                await self._read(tp, low, high + 1)
            # Not projected yet (or no read model at all): scan to the end.
            await self._read(tp, projected.get(tp.partition, 0), ends[tp])
        for fact in list(self._seen.values()):
            error = str(fact.data.get("error", ""))
            if fact.kind == "delivery.failed" and ("410" in error or "invalidated" in error):
                tp = TopicPartition(fact.topic, fact.partition)
                await self._read(tp, max(0, fact.offset - INVALIDATION_LOOKBACK), fact.offset)
        dtps = [TopicPartition(names.deadletter, p) for p in letters]
        if dtps:
            firsts, dends = await self._consumer.beginning_offsets(dtps), await self._consumer.end_offsets(dtps)
            for tp in dtps:
                await self._read(tp, firsts[tp], dends[tp], dead_letter=True)
        return list(self._seen.values())

    async def _read(self, tp: TopicPartition, start: int, end: int, *, dead_letter: bool = False) -> None:
        if start >= end:
            return
        consumer = self._consumer
        consumer.assign([tp])
        consumer.seek(tp, start)
        idle = 0
        while True:
            polled = await consumer.getmany(tp, timeout_ms=200, max_records=5000)
            records = polled.get(tp, [])
            if not records:
                idle += 1
                if idle >= IDLE_POLLS:
                    raise LogUnreachable(f"{tp.topic}/{tp.partition} stopped short of offset {end}")
                continue
            idle = 0
            if self._progress is not None:
                self._progress(len(records))
            for r in records:
                if r.offset >= end:
                    return
                self._consider(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, r.headers, dead_letter)
            if records[-1].offset + 1 >= end:
                return

    def _consider(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp: int,
        key: bytes | None,
        value: bytes | None,
        raw_headers: Iterable[tuple[str, bytes]] | None,
        dead_letter: bool,
    ) -> None:
        if (topic, partition, offset) in self._seen:
            return
        headers = {k: v.decode("utf-8", "replace") for k, v in raw_headers or ()}
        raw = value or b""
        if self._needle not in raw and headers.get("ce_id") != self._nid:
            return  # the cheap test first: most records of a scan are about something else
        event = _loads(raw)
        if "ce_type" in headers:  # binary mode: attributes in headers, data in the value
            event = {**{k[3:]: v for k, v in headers.items() if k.startswith("ce_")}, "data": event}
        if not concerns(self._nid, event, headers, raw):
            return
        kind = DEADLETTER if dead_letter else str(event.get("type", "unknown"))
        self._seen[(topic, partition, offset)] = Fact(topic, partition, offset, timestamp, kind, event, headers)


async def _hints(
    locator: Locator | None, nid: str, topic: str, partitions: list[int]
) -> tuple[set[tuple[int, int]], dict[int, int]]:
    """Known (partition, offset) of the notification's events, and the projector's position."""
    if locator is None:
        return set(), {}
    try:
        trail = await locator.events(nid)
        projected = {p: await locator.projected_offset(topic, p) for p in partitions}
    except (SQLAlchemyError, OSError) as exc:
        # The log alone can answer: scan it all (slower, never wrong).
        log.warning("read models unavailable: scanning the whole log", extra={"error": type(exc).__name__})
        return set(), {}
    return {(int(e["partition"]), int(e["offset"])) for e in trail}, projected


def _clusters(offsets: list[int]) -> list[tuple[int, int]]:
    """Sorted offsets grouped into ranges with gaps below ``CLUSTER_GAP``."""
    out: list[tuple[int, int]] = []
    for offset in offsets:
        if out and offset - out[-1][1] < CLUSTER_GAP:
            out[-1] = (out[-1][0], offset)
        else:
            out.append((offset, offset))
    return out


def _loads(raw: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


class ExplainRoutes:
    """``GET /api/notifications/{id}/explain``."""

    def __init__(self, verifier: TokenVerifier, locator: Locator, settings: Settings) -> None:
        self._verifier = verifier
        self._locator = locator
        self._settings = settings

    def register(self, app: web.Application) -> None:
        """Add the route."""
        app.router.add_get("/api/notifications/{id}/explain", self.explain)

    async def explain(self, request: web.Request) -> web.Response:
        """The decision chain; 404 for an unknown id and for another user's notification."""
        principal = self._verifier.from_request(request)
        nid = path_id(request)
        try:
            found = await explain_notification(self._settings, nid, self._locator)
        except LogUnreachable as exc:
            raise Problem(503, "Service Unavailable", str(exc)) from None
        if found is None or not (principal.has(SCOPE_ADMIN) or found.user_id == principal.subject):
            raise Problem(404, "Not Found", "no such notification")
        return web.json_response(found.as_json())
