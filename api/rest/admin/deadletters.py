"""The console's dead letters (issue 12): browse ``herald.deadletter`` newest first and re-drive
records to their source topic once the cause is fixed.

Before, an operator could read dead letters only with a Kafka client and put one back only by
hand, unrecorded. Records are read straight from Kafka by a consumer without a group (nothing
is committed), in bounded windows: a page reads at most ``limit`` records back from each
partition's end (a ``before=p:o`` cursor is located in the other partitions by a binary search
on record timestamps), more only when a filter leaves too few, never more than
``SCAN_BUDGET`` records per request. A re-drive produces the record's original key, value and
headers (the dead-letter headers removed, ``herald-redriven-from`` added) to its source topic
and appends ``deadletter.redriven`` naming the operator; the first re-drive of a record has an
id derived from its coordinates, so the projector's ledger answers "was it re-driven?" by
primary key, and a second re-drive needs ``force``. A copy that fails again is dead-lettered
again by the agent that reads it, with its new reason.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from api.problems import Problem
from api.publisher import RawRecord
from api.rest.admin import AdminContext, require_admin
from api.rest.params import json_body
from api.rest.read_your_writes import ReadYourWrites
from engine.topics import TopicNames
from projections.models import EventRow
from schemas.codec import format_time
from schemas.envelope import Envelope
from schemas.events import DeadletterRedriven
from schemas.ids import derived_id, uuid7
from schemas.limits import MAX_ID_LENGTH

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
"""Dead letters per page."""
MAX_REDRIVE = 500
"""Records one re-drive may name, or re-drive by filter."""
SCAN_BUDGET = 10_000
"""Records one request reads at most (a filter that matches little ends a page early, with ``next``)."""
FILTER_CHUNK = 500
"""Records read back per partition and round when a filter is given."""
PREVIEW_BYTES = 2048
KEY_CHARS = 1024
BODY_BYTES = 64 * 1024
CONCURRENT_READS = 2
"""Requests reading the dead-letter topic at once (each holds one consumer)."""
CONNECT_TIMEOUT_SECONDS = 10.0
IDLE_POLLS = 25
"""Empty polls in a row (200 ms each) before a range short of its end is an error."""
RECENT = 10_000
"""Re-drives remembered in memory until the projector's ledger shows them."""
REDRIVEN_FROM = "herald-redriven-from"
"""Header of a re-driven copy: ``topic/partition/offset`` of the dead letter it came from."""
REASON = "herald-error"
_CURSOR = re.compile(r"^([0-9]{1,9}):([0-9]{1,19})$")

Key = tuple[int, int, int]
"""Order of dead letters: (timestamp ms, partition, offset); newest first is descending."""


class Unreachable(Exception):
    """The broker cannot be reached, or stopped answering mid-read."""


@dataclass(frozen=True, slots=True)
class Letter:
    """One dead-letter record."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def sort_key(self) -> Key:
        return (self.timestamp_ms, self.partition, self.offset)

    def header(self, name: str) -> str | None:
        """The last header called ``name`` (dead-letter headers come after the record's own)."""
        for k, v in reversed(self.headers):
            if k == name:
                return (v or b"").decode("utf-8", "replace")
        return None

    def int_header(self, name: str) -> int | None:
        raw = self.header(name)
        return int(raw) if raw is not None and raw.isascii() and raw.isdigit() and len(raw) < 19 else None

    @property
    def reason(self) -> str:
        return self.header(REASON) or ""

    @property
    def source_topic(self) -> str | None:
        return self.header("herald-source-topic")

    def original_headers(self) -> list[tuple[str, bytes]]:
        """The record's own headers: those before the last ``herald-error`` (``dead_letter`` appends
        its headers after them), without an earlier re-drive's mark."""
        cut = max((i for i, (k, _) in enumerate(self.headers) if k == REASON), default=len(self.headers))
        return [(k, v or b"") for k, v in self.headers[:cut] if k != REDRIVEN_FROM]

    def matches(self, source_topic: str | None, reason: str | None) -> bool:
        if source_topic is not None and self.source_topic != source_topic:
            return False
        return reason is None or reason.lower() in self.reason.lower()


@dataclass(frozen=True, slots=True)
class Query:
    """What a page or a re-drive by filter looks for."""

    source_topic: str | None = None
    reason: str | None = None

    @property
    def filtered(self) -> bool:
        return self.source_topic is not None or self.reason is not None


def register_deadletters(app: web.Application, ctx: AdminContext) -> None:
    """Add ``GET /api/admin/deadletters`` and ``POST /api/admin/deadletters/redrive``."""
    routes = DeadLetterRoutes(ctx)
    app.router.add_get("/api/admin/deadletters", routes.browse)
    app.router.add_post("/api/admin/deadletters/redrive", routes.redrive)


class DeadLetterRoutes:
    """The two routes; one re-drive at a time per API process."""

    def __init__(self, ctx: AdminContext) -> None:
        self._ctx = ctx
        self._names = TopicNames(ctx.settings.topic_prefix)
        self._reads = asyncio.Semaphore(CONCURRENT_READS)
        self._redrive_lock = asyncio.Lock()
        self._recent: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._ryw = ReadYourWrites(ctx.queries, ctx.settings.read_your_writes_timeout)

    @property
    def topic(self) -> str:
        return self._names.deadletter

    # -- GET /api/admin/deadletters -------------------------------------------------------------

    async def browse(self, request: web.Request) -> web.Response:
        """A page of dead letters, newest first."""
        require_admin(self._ctx, request)
        limit = _int_query(request, "limit", DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
        before = _cursor_query(request)
        query = Query(_str_query(request, "source_topic", 250), _str_query(request, "reason", 200))
        async with self._reads, self._consumer() as reader:
            cursor = None if before is None else await reader.key_at(*before)
            letters, next_cursor = await reader.page(limit, cursor, query)
        redriven = await self._redriven([(x.partition, x.offset) for x in letters])
        items = [_item(x, (x.partition, x.offset) in redriven) for x in letters]
        return web.json_response({"items": items, "next": next_cursor})

    # -- POST /api/admin/deadletters/redrive ----------------------------------------------------

    async def redrive(self, request: web.Request) -> web.Response:
        """Produce the named (or matching) dead letters to their source topics again."""
        principal = require_admin(self._ctx, request)
        if not _usable(principal.subject):  # it names the operator in the log
            raise _bad("Authorization", f"the token's subject must be 1 to {MAX_ID_LENGTH} characters to be recorded")
        body = await json_body(request, max_bytes=BODY_BYTES)
        coords, query, most, force = _redrive_body(body)
        publisher = self._ctx.publisher
        if publisher is None:
            raise Problem(503, "Service Unavailable", "this API instance cannot write to the broker")
        skipped: list[dict[str, Any]] = []
        async with self._redrive_lock, self._reads, self._consumer() as reader:
            if coords is not None:
                found, missing = await reader.fetch(coords)
                skipped += [{"partition": p, "offset": o, "why": why} for p, o, why in missing]
                before = await self._redriven([(x.partition, x.offset) for x in found])
            else:
                found, before = await self._by_filter(reader, query, most, force)
            todo: list[tuple[Letter, bool]] = []
            for letter in sorted(found, key=lambda x: (x.partition, x.offset)):  # each partition in log order
                coordinates = (letter.partition, letter.offset)
                why = self._refusal(letter, coordinates in before, force)
                if why is not None:
                    skipped.append({"partition": letter.partition, "offset": letter.offset, "why": why})
                else:
                    todo.append((letter, coordinates in before))
            records = [
                RawRecord(
                    topic=letter.source_topic or "",
                    key=letter.key,
                    value=letter.value,
                    headers=[
                        *letter.original_headers(),
                        (REDRIVEN_FROM, f"{self.topic}/{letter.partition}/{letter.offset}".encode()),
                    ],
                    partition=reader.partition_in(
                        letter.source_topic or "", letter.int_header("herald-source-partition")
                    ),
                )
                for letter, _ in todo
            ]
            try:
                copies = await publisher.forward(records)
            except KafkaError as exc:
                raise Problem(
                    503, "Service Unavailable", f"the broker refused the re-drive: {type(exc).__name__}"
                ) from None
            for letter, _ in todo:  # out: never again without force, even if recording it fails
                self._remember((letter.partition, letter.offset))
            facts = [
                self._fact(letter, again, principal.subject, copy.partition, copy.offset)
                for (letter, again), copy in zip(todo, copies, strict=True)
            ]
            try:
                written = await publisher.append_many(facts)
            except KafkaError as exc:
                where = [f"{x.partition}:{x.offset}" for x, _ in todo]
                log.error("re-driven but not recorded", extra={"error": type(exc).__name__, "records": where})
                raise Problem(
                    503,
                    "Service Unavailable",
                    f"re-driven, but the event log refused the record of it: {type(exc).__name__}",
                ) from None
        for letter, again in todo:
            log.info(
                "dead letter re-driven",
                extra={
                    "operator": principal.subject,
                    "partition": letter.partition,
                    "offset": letter.offset,
                    "topic": letter.source_topic,
                    "forced": again,
                },
            )
        await self._ryw.offsets(written)  # a list right after shows them re-driven (bounded wait)
        return web.json_response({"redriven": len(todo), "skipped": skipped}, status=202)

    async def _by_filter(
        self, reader: _Reader, query: Query, most: int, force: bool
    ) -> tuple[list[Letter], set[tuple[int, int]]]:
        """Up to ``most`` matching dead letters not re-driven yet (any, with ``force``), newest first."""
        chosen: list[Letter] = []
        redriven: set[tuple[int, int]] = set()
        before: Key | None = None
        scanned = 0
        while len(chosen) < most and scanned < SCAN_BUDGET:
            page, cursor = await reader.page(MAX_LIMIT, before, query)
            scanned += reader.scanned
            found = await self._redriven([(x.partition, x.offset) for x in page])
            redriven |= found
            for letter in page:
                if force or (letter.partition, letter.offset) not in found:
                    chosen.append(letter)
                if len(chosen) >= most:
                    break
            if cursor is None:
                break
            p, o = (int(v) for v in cursor.split(":"))
            before = await reader.key_at(p, o)
        return chosen, redriven

    def _refusal(self, letter: Letter, redriven: bool, force: bool) -> str | None:
        if redriven and not force:
            return "already re-driven (set force to re-drive it again)"
        source = letter.source_topic
        if source is None:
            return "no herald-source-topic header: where it came from is unknown"
        inputs = {*self._names.requests, *self._names.deliveries, self._names.scheduled}
        if source not in inputs:
            return f"source topic {source!r} is not one of Herald's input topics"
        return None

    def _fact(self, letter: Letter, again: bool, operator: str, partition: int, offset: int) -> Envelope:
        about = _about(letter)
        coordinates = (self.topic, str(letter.partition), str(letter.offset))
        event_id = derived_id("deadletter.redriven", *coordinates, *((uuid7(),) if again else ()))
        return Envelope(
            id=event_id,
            source="herald/console",
            time=datetime.now(UTC),
            data=DeadletterRedriven(
                operator=operator,
                deadletter_topic=self.topic,
                deadletter_partition=letter.partition,
                deadletter_offset=letter.offset,
                source_topic=letter.source_topic or "",
                reason=letter.reason[:4000],
                redriven_partition=partition,
                redriven_offset=offset,
                source_partition=letter.int_header("herald-source-partition"),
                source_offset=letter.int_header("herald-source-offset"),
                request_id=about.get("id"),
                forced=again,
            ),
            subject=about.get("id"),
            userid=about.get("user"),
            correlationid=about.get("correlation") or about.get("id"),
        )

    async def _redriven(self, coords: list[tuple[int, int]]) -> set[tuple[int, int]]:
        """Which of ``coords`` were re-driven: the projector's ledger, and this process's latest re-drives."""
        if not coords:
            return set()
        engine = self._ctx.engine
        if engine is None:
            raise Problem(503, "Service Unavailable", "the read models are not available to this API instance")
        ids = {derived_id("deadletter.redriven", self.topic, str(p), str(o)): (p, o) for p, o in coords}
        try:
            async with engine.connect() as conn:
                rows = (await conn.execute(select(EventRow.event_id).where(EventRow.event_id.in_(list(ids))))).all()
        except (SQLAlchemyError, OSError) as exc:
            raise Problem(
                503, "Service Unavailable", f"the read models are unavailable ({type(exc).__name__})"
            ) from None
        return {ids[r.event_id] for r in rows} | {c for c in coords if c in self._recent}

    def _remember(self, coordinates: tuple[int, int]) -> None:
        self._recent[coordinates] = None
        while len(self._recent) > RECENT:
            self._recent.popitem(last=False)

    @asynccontextmanager
    async def _consumer(self) -> AsyncIterator[_Reader]:
        settings = self._ctx.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            max_partition_fetch_bytes=1024 * 1024,
            request_timeout_ms=int(CONNECT_TIMEOUT_SECONDS * 1000),
        )
        try:
            await asyncio.wait_for(consumer.start(), CONNECT_TIMEOUT_SECONDS)
        except (KafkaError, OSError, TimeoutError) as exc:
            await consumer.stop()
            raise Problem(503, "Service Unavailable", f"cannot reach the Kafka broker ({type(exc).__name__})") from None
        try:
            inputs = (*self._names.requests, *self._names.deliveries, self._names.scheduled)
            reader = _Reader(consumer, self.topic, inputs)
            await reader.start()
            yield reader
        except (KafkaError, Unreachable) as exc:
            raise Problem(503, "Service Unavailable", f"reading the dead letters failed: {exc}") from None
        finally:
            await consumer.stop()


class _Reader:
    """Bounded reads of the dead-letter topic with one started consumer."""

    def __init__(self, consumer: AIOKafkaConsumer, topic: str, inputs: tuple[str, ...]) -> None:
        self._consumer = consumer
        self._topic = topic
        self._inputs = inputs
        self._partitions: dict[str, frozenset[int]] = {}
        self.firsts: dict[int, int] = {}
        self.ends: dict[int, int] = {}
        self.scanned = 0
        """Records read by the last ``page``."""

    async def start(self) -> None:
        await self._consumer.topics()  # refresh metadata
        # Read now: once partitions are assigned, the consumer's metadata covers only those topics.
        self._partitions = {t: frozenset(self._consumer.partitions_for_topic(t) or ()) for t in self._inputs}
        parts = sorted(self._consumer.partitions_for_topic(self._topic) or ())
        if not parts:
            return  # nothing dead-lettered yet (the topic is created at start-up)
        tps = [TopicPartition(self._topic, p) for p in parts]
        firsts = await self._consumer.beginning_offsets(tps)
        ends = await self._consumer.end_offsets(tps)
        self.firsts = {tp.partition: firsts[tp] for tp in tps}
        self.ends = {tp.partition: ends[tp] for tp in tps}

    def partition_in(self, topic: str, partition: int | None) -> int | None:
        """``partition`` if ``topic`` has it (the copy goes where the original was), else ``None`` (by key)."""
        if partition is None:
            return None
        return partition if partition in self._partitions.get(topic, ()) else None

    async def key_at(self, partition: int, offset: int) -> Key:
        """The sort key of the dead letter at ``partition:offset``; ``Problem`` 422 if there is none."""
        if not self.firsts.get(partition, 0) <= offset < self.ends.get(partition, 0):
            raise _bad("before", f"before: no dead letter at {partition}:{offset}")
        found = await self._first_from(partition, offset)
        if found is None or found.offset != offset:
            raise _bad("before", f"before: no dead letter at {partition}:{offset}")
        return found.sort_key

    async def page(self, limit: int, cursor: Key | None, query: Query) -> tuple[list[Letter], str | None]:
        """Up to ``limit`` dead letters older than ``cursor`` matching ``query``, newest first, and the next cursor."""
        self.scanned = 0
        hi: dict[int, int] = {}
        for p in self.ends:
            if cursor is None:
                hi[p] = self.ends[p]
            elif p == cursor[1]:
                hi[p] = cursor[2]
            else:
                hi[p] = await self._boundary(p, cursor)
        active = [p for p in sorted(hi) if hi[p] > self.firsts[p]]
        exhausted = {p for p in hi if p not in active}
        chunk = max(limit, FILTER_CHUNK) if query.filtered else limit
        kept: list[Letter] = []
        frontier: dict[int, Letter] = {}
        while active and self.scanned < SCAN_BUDGET:  # every partition gets its first chunk
            for p in list(active):
                start = max(self.firsts[p], hi[p] - chunk)
                letters = await self._range(p, start, hi[p])
                self.scanned += hi[p] - start
                hi[p] = start
                if letters:
                    frontier[p] = letters[0]
                mine = [x for x in letters if cursor is None or x.sort_key < cursor]
                matching = [x for x in mine if x.matches(query.source_topic, query.reason)]
                kept += matching
                if start <= self.firsts[p]:
                    exhausted.add(p)
                    active.remove(p)
                elif sum(1 for x in kept if x.partition == p) >= limit:
                    active.remove(p)
        # A partition not read to its start holds older records only (older than its frontier):
        # what is at least as new as every such frontier is certainly in order, the rest is read again.
        edges = [frontier[p] for p in hi if p not in exhausted and p in frontier]
        edge = max(edges, key=lambda x: x.sort_key) if edges else None
        candidates = sorted(
            (x for x in kept if edge is None or x.sort_key >= edge.sort_key), key=lambda x: x.sort_key, reverse=True
        )
        items = candidates[:limit]
        if len(items) == limit and (len(candidates) > limit or edge is not None):
            return items, f"{items[-1].partition}:{items[-1].offset}"
        if edge is not None:  # the budget ran out before a full page: go on from the edge
            return items, f"{edge.partition}:{edge.offset}"
        return items, None

    async def fetch(self, coords: list[tuple[int, int]]) -> tuple[list[Letter], list[tuple[int, int, str]]]:
        """The dead letters at ``coords`` (deduplicated), and the coordinates that name none, with why."""
        missing: list[tuple[int, int, str]] = []
        wanted: dict[int, set[int]] = {}
        for p, o in coords:
            if o in wanted.get(p, set()):
                missing.append((p, o, "listed twice"))
            elif p not in self.ends:
                missing.append((p, o, f"{self._topic} has no partition {p}"))
            elif not self.firsts[p] <= o < self.ends[p]:
                missing.append((p, o, "no such dead letter (offset out of range)"))
            else:
                wanted.setdefault(p, set()).add(o)
        found: list[Letter] = []
        for p, offsets in wanted.items():
            for low, high in _clusters(sorted(offsets)):
                letters = {x.offset: x for x in await self._range(p, low, high + 1)}
                for o in sorted(offsets):
                    if low <= o <= high:
                        if o in letters:
                            found.append(letters[o])
                        else:
                            missing.append((p, o, "no such dead letter"))
        return found, missing

    async def _boundary(self, partition: int, cursor: Key) -> int:
        """First offset of ``partition`` whose record sorts at or after ``cursor`` (binary search;
        timestamps grow with offsets within a partition)."""
        lo, hi = self.firsts[partition], self.ends[partition]
        while lo < hi:
            mid = (lo + hi) // 2
            found = await self._first_from(partition, mid)
            if found is None:
                hi = mid
            elif found.sort_key < cursor:
                lo = found.offset + 1
            else:
                hi = mid
        return lo

    async def _first_from(self, partition: int, offset: int) -> Letter | None:
        letters = await self._range(partition, offset, min(offset + 1, self.ends[partition]), at_least_one=True)
        return letters[0] if letters else None

    async def _range(self, partition: int, start: int, end: int, *, at_least_one: bool = False) -> list[Letter]:
        """Records ``[start, end)`` of ``partition`` (with ``at_least_one``: the first record at or after ``start``)."""
        if start >= end:
            return []
        tp = TopicPartition(self._topic, partition)
        self._consumer.assign([tp])
        self._consumer.seek(tp, start)
        out: list[Letter] = []
        idle = 0
        while True:
            polled = await self._consumer.getmany(tp, timeout_ms=200, max_records=min(end - start, 1000))
            records = polled.get(tp, [])
            if not records:
                idle += 1
                if idle >= IDLE_POLLS:
                    raise Unreachable(f"{self._topic}/{partition} stopped short of offset {end}")
                continue
            idle = 0
            for r in records:
                if r.offset >= end and not (at_least_one and not out):
                    return out
                out.append(Letter(r.partition, r.offset, r.timestamp, r.key, r.value, tuple(r.headers or ())))
                if at_least_one:
                    return out
            if records[-1].offset + 1 >= end:
                return out


def _clusters(offsets: list[int], gap: int = 100) -> list[tuple[int, int]]:
    """Sorted offsets grouped into ranges with gaps below ``gap`` (one read each)."""
    out: list[tuple[int, int]] = []
    for offset in offsets:
        if out and offset - out[-1][1] < gap:
            out[-1] = (out[-1][0], offset)
        else:
            out.append((offset, offset))
    return out


def _item(letter: Letter, redriven: bool) -> dict[str, Any]:
    value = letter.value or b""
    preview = value[:PREVIEW_BYTES].decode("utf-8", "replace")
    while len(preview.encode()) > PREVIEW_BYTES:  # replacement characters are 3 bytes
        preview = preview[:-1]
    return {
        "partition": letter.partition,
        "offset": letter.offset,
        "timestamp": format_time(datetime.fromtimestamp(max(letter.timestamp_ms, 0) / 1000, UTC)),
        "reason": letter.reason,
        "source_topic": letter.source_topic,
        "source_partition": letter.int_header("herald-source-partition"),
        "source_offset": letter.int_header("herald-source-offset"),
        "key": None if letter.key is None else letter.key.decode("utf-8", "replace")[:KEY_CHARS],
        "value_preview": preview,
        "size": len(value),
        "redriven": redriven,
        "redriven_from": letter.header(REDRIVEN_FROM),
        "channel": letter.header("herald-channel"),
    }


def _about(letter: Letter) -> dict[str, str]:
    """The request (or notification) id, user and correlation id a record carries, where readable."""
    found: dict[str, Any] = {}
    value = letter.value or b""
    if len(value) <= 1024 * 1024:
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict):
            raw_data = doc.get("data")
            data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
            kind = doc.get("type")
            found["id"] = doc.get("id") if kind in (None, "notification.requested") else doc.get("subject")
            found["id"] = found["id"] or data.get("notification_id")
            found["user"] = doc.get("userid") or data.get("user_id")
            found["correlation"] = doc.get("correlationid")
    for name, header in (("id", "ce_id"), ("user", "ce_userid"), ("correlation", "ce_correlationid")):
        found.setdefault(name, None)
        found[name] = found[name] or letter.header(header)
    return {k: v for k, v in found.items() if _usable(v)}


def _usable(value: Any) -> bool:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- parameters and bodies (422 problem+json naming what is wrong) -----------------------------


def _bad(name: str, detail: str) -> Problem:
    return Problem(422, "Unprocessable Content", detail, parameter=name)


def _int_query(request: web.Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9 or not low <= int(raw) <= high:
        raise _bad(name, f"{name} must be an integer from {low} to {high}")
    return int(raw)


def _str_query(request: web.Request, name: str, max_length: int) -> str | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not 0 < len(raw) <= max_length or "\x00" in raw:
        raise _bad(name, f"{name} must be 1 to {max_length} characters")
    return raw


def _cursor_query(request: web.Request) -> tuple[int, int] | None:
    raw = request.query.get("before")
    if raw is None:
        return None
    match = _CURSOR.match(raw)
    if match is None:
        raise _bad("before", "before must be partition:offset, e.g. 0:1234 (a page's next)")
    return int(match[1]), int(match[2])


def _redrive_body(body: dict[str, Any]) -> tuple[list[tuple[int, int]] | None, Query, int, bool]:
    """``(records or None, filter, max, force)`` of a re-drive body; ``Problem`` 422 naming the field at fault."""
    unknown = sorted(set(body) - {"records", "filter", "max", "force"})
    if unknown:
        raise _bad(unknown[0], f"unknown field(s) {unknown}; expected records or filter, max, force")
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise _bad("force", "force must be true or false")
    if ("records" in body) == ("filter" in body):
        raise _bad("records", "give exactly one of records (a list of {partition, offset}) or filter")
    if "records" in body:
        if "max" in body:
            raise _bad("max", "max goes with filter; records names its records")
        records = body["records"]
        if not isinstance(records, list) or not 0 < len(records) <= MAX_REDRIVE:
            raise _bad("records", f"records must be a list of 1 to {MAX_REDRIVE} {{partition, offset}} objects")
        coords = []
        for i, item in enumerate(records):
            if not isinstance(item, dict) or set(item) != {"partition", "offset"}:
                raise _bad(f"records[{i}]", f"records[{i}] must be an object with partition and offset only")
            for field in ("partition", "offset"):
                value = item[field]
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
                    raise _bad(f"records[{i}].{field}", f"records[{i}].{field} must be a non-negative integer")
            coords.append((item["partition"], item["offset"]))
        return coords, Query(), MAX_REDRIVE, force
    spec = body["filter"]
    if not isinstance(spec, dict):
        raise _bad("filter", "filter must be an object with source_topic and/or reason")
    extra = sorted(set(spec) - {"source_topic", "reason"})
    if extra:
        raise _bad(f"filter.{extra[0]}", f"filter: unknown field(s) {extra}; expected source_topic, reason")
    for field, length in (("source_topic", 250), ("reason", 200)):
        value = spec.get(field)
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= length or "\x00" in value):
            raise _bad(f"filter.{field}", f"filter.{field} must be 1 to {length} characters")
    query = Query(spec.get("source_topic"), spec.get("reason"))
    if not query.filtered:
        raise _bad("filter", "filter needs source_topic or reason (re-driving everything is not offered)")
    most = body.get("max", MAX_REDRIVE)
    if not isinstance(most, int) or isinstance(most, bool) or not 0 < most <= MAX_REDRIVE:
        raise _bad("max", f"max must be an integer from 1 to {MAX_REDRIVE}")
    return None, query, most, force
