"""Every metric of ``docs/observability.md``, read from ``/metrics`` after the event that moves it.

The docs table is the catalogue: this module parses it and runs, for each row, the
scenario that causes the row's "moves when" on one real stack (worker, projector and
API in this process; Tansu, Postgres, Redis, the APNs emulator), then reads the value
back from the API's ``/metrics``. A documented metric without a scenario fails, and so
does a metric served on ``/metrics`` that the table does not list.

Four scenarios drive one real component beside the stack because the fault they count
cannot be caused on demand through it: the projector's gap reader (Tansu has no
transactions, whose markers are the gaps Kafka leaves), the live dispatch against an
unreachable Redis, the receipt writer with a closed producer, and the JWKS refresher
against a provider that goes down (the last three in an event loop of their own, so the
stack's supervisor does not take their tasks' ending for a crash). The registry is the
process's, so the stack's ``/metrics`` shows them all the same.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from api.jwks import JWKS_FETCH_FAILURES, MIN_FETCH_INTERVAL, JwksKeys
from api.publisher import Publisher
from api.ws.receipts import Receipts
from engine.settings import Settings
from engine.topics import TopicNames
from herald.apns_emulator import ApnsEmulator
from herald.broker import free_port
from herald.stack import Stack, run_stack
from projections.contiguity import Contiguity
from schemas.codec import format_time
from streams.apns_sink import ApnsSink
from streams.device_registry import DeviceRegistry
from streams.live_dispatch import DISPATCH_FAILURES, Live, LiveDispatch
from streams.websocket_dispatch import RedisDispatcher
from tests.support.api import Api, own_database
from tests.support.apns import apns_settings
from tests.support.clients import UserClient, missed_notifications, next_frame
from tests.support.kafka import publish, request
from tests.support.log_reader import TopicTail, assign_from_start
from tests.support.processes import start_role, stop_role
from tests.support.settings import isolated_settings
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DOC = Path(__file__).parents[2] / "docs" / "observability.md"
SENT_TTL = 3.0
"""Sent-target memory of this stack (at least its short retry horizon)."""
WRITE_BURST = 6
LOW_RATE_LIMIT = 3


def documented_metrics() -> list[str]:
    """The metric names of the table in the "Metrics" section of docs/observability.md."""
    section = DOC.read_text().split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z_:][a-z0-9_:]*)` \|", section, flags=re.MULTILINE)


# --- the stack -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with own_database("herald_metrics") as url:
        yield url


@pytest.fixture(scope="module")
def settings(
    kafka_bootstrap: str, redis_url: str, database: str, emulator: ApnsEmulator, signing_key: tuple[str, str]
) -> Settings:
    return isolated_settings(
        kafka_bootstrap,
        redis_url,
        database_url=database,
        **apns_settings(emulator, signing_key[0]),
        retry_base_delay_seconds=0.3,
        retry_max_delay_seconds=0.6,
        retry_max_attempts=2,
        retry_jitter=0.1,
        scheduler_tick_seconds=0.2,
        delivery_timeout_seconds=1.0,
        sent_targets_ttl_seconds=SENT_TTL,
        rate_limit_low=LOW_RATE_LIMIT,
        write_burst=WRITE_BURST,
        write_rate_per_second=0.1,
        ws_send_queue_size=8,
    )


@pytest.fixture(scope="module")
def registry() -> DeviceRegistry:
    return DeviceRegistry()


@pytest.fixture(scope="module")
async def stack(settings: Settings, registry: DeviceRegistry) -> AsyncIterator[Stack]:
    async with run_stack(settings, sinks=[ApnsSink(settings, registry)]) as running:
        yield running


@pytest.fixture(scope="module")
async def events(stack: Stack, settings: Settings) -> AsyncIterator[TopicTail]:
    assert stack.topics is not None
    tail = TopicTail(settings.kafka_bootstrap, stack.topics.names.events)
    await tail.start()
    yield tail
    await tail.stop()


@pytest.fixture(scope="module")
async def ctx(
    stack: Stack, settings: Settings, registry: DeviceRegistry, emulator: ApnsEmulator, events: TopicTail
) -> AsyncIterator[Ctx]:
    async with aiohttp.ClientSession() as http:
        yield Ctx(stack, settings, registry, emulator, events, http)


Samples = dict[str, list[tuple[dict[str, str], float]]]


@dataclass
class Ctx:
    """The running stack and what scenarios do to it."""

    stack: Stack
    settings: Settings
    registry: DeviceRegistry
    emulator: ApnsEmulator
    events: TopicTail
    http: aiohttp.ClientSession
    done: dict[str, BaseException | None] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.stack.http_port}"

    @property
    def names(self) -> TopicNames:
        return TopicNames(self.settings.topic_prefix)

    async def scrape(self) -> tuple[Samples, dict[str, str]]:
        """Every sample of ``/metrics`` by sample name, and each family's type by documented name."""
        async with self.http.get(self.base + "/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        samples: Samples = {}
        types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            types[family.name + ("_total" if family.type == "counter" else "")] = family.type
            for s in family.samples:
                samples.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
        return samples, types

    async def value(self, sample: str, **labels: str) -> float:
        """The sum of ``sample``'s series whose labels include ``labels`` (0 when there are none)."""
        samples, _ = await self.scrape()
        return sum(v for lbl, v in samples.get(sample, []) if labels.items() <= lbl.items())

    async def reaches(self, sample: str, at_least: float, *, timeout: float = 30, **labels: str) -> float:
        """Wait until ``sample`` (summed over ``labels``) is at least ``at_least``."""

        async def probe() -> float | None:
            got = await self.value(sample, **labels)
            return got if got >= at_least else None

        return await eventually(probe, timeout=timeout, what=f"{sample}{labels} >= {at_least}")

    def user(self, name: str) -> str:
        return f"{name}-{uuid.uuid4().hex[:6]}"

    def api(self, user: str, *scopes: str) -> Api:
        return Api.for_user(self.http, self.base, self.settings, user, *scopes)

    async def publish(self, user: str, priority: str = "medium", **data: Any) -> str:
        """A request published to Kafka as any producer would; returns its id."""
        body = request(user, data.pop("title", "Hello"), priority=priority, **data)
        await publish(
            self.settings.kafka_bootstrap,
            self.names.request(priority),  # type: ignore[arg-type]
            [(user.encode(), json.dumps(body).encode())],
        )
        return str(body["id"])

    async def device(self, user: str) -> str:
        """A new APNs token registered over REST and known to the worker's registry."""
        token = secrets.token_hex(32)
        reply = await self.api(user).post("/api/devices", json={"device_token": token})
        assert reply.status == 201, reply.body

        async def known() -> bool:
            return token in self.registry.active_tokens(user)

        await eventually(known, what="the device in the worker's registry")
        return token

    async def projected_everything(self) -> None:
        """Until the stack's projector has applied every event the log holds now: the read-model
        gauges then count everything published before."""
        projector = self.stack.projector
        assert projector is not None
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = await assign_from_start(consumer, self.names.events)
            ends = {tp.partition: end for tp, end in (await consumer.end_offsets(tps)).items()}
        finally:
            await consumer.stop()
        # Tansu answers the start of a partition's last record batch as its end: what the
        # event-log tail has read counts too.
        for record in self.events.records:
            ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)

        async def caught_up() -> bool:
            stored = await projector.stored_offsets()
            return all(stored.get(partition, 0) >= end for partition, end in ends.items())

        await eventually(caught_up, what=f"the projector at the event log's end {ends}")

    async def projected(self, user: str, nid: str, status: str | None = None) -> dict[str, Any]:
        """The notification as the REST API shows it, once projected (with ``status`` if given)."""
        api = self.api(user)

        async def probe() -> dict[str, Any] | None:
            reply = await api.get(f"/api/notifications/{nid}")
            if reply.status == 200 and (status is None or reply.body["status"] == status):
                return dict(reply.body)
            return None

        return await eventually(probe, what=f"{nid} projected" + (f" as {status}" if status else ""))


Scenario = Callable[[Ctx], Awaitable[None]]
SCENARIOS: dict[str, Scenario] = {}


def moves(*metrics: str) -> Callable[[Scenario], Scenario]:
    """Register ``scenario`` as the proof that it moves each of ``metrics``."""

    def register(scenario: Scenario) -> Scenario:
        for metric in metrics:
            assert metric not in SCENARIOS, f"{metric} has two scenarios"
            SCENARIOS[metric] = scenario
        return scenario

    return register


# --- scenarios ------------------------------------------------------------------------------------


@moves(
    "notifications_created_total",
    "notifications_delivered_total",
    "notification_delivery_latency_seconds",
    "websocket_dispatch_batch_size",
    "active_websocket_connections",
    "websocket_notifications_delivered_total",
    "websocket_delivery_latency_seconds",
)
async def live_websocket_delivery(ctx: Ctx) -> None:
    user = ctx.user("ada")
    created = await ctx.value("notifications_created_total", priority="high")
    handed = await ctx.value("notifications_delivered_total", channel="websocket", priority="high")
    latency = await ctx.value("notification_delivery_latency_seconds_count", channel="websocket", priority="high")
    batches = await ctx.value("websocket_dispatch_batch_size_count")
    written = await ctx.value("websocket_notifications_delivered_total", priority="high", via="live")
    on_socket = await ctx.value("websocket_delivery_latency_seconds_count", priority="high", via="live")
    connections = await ctx.value("active_websocket_connections")

    ws = await UserClient(ctx.http, ctx.base, ctx.settings, user).websocket()
    await missed_notifications(ws)
    assert await ctx.reaches("active_websocket_connections", connections + 1) == connections + 1
    nid = await ctx.publish(user, "high", title="Live", channels=["websocket"])
    assert (await next_frame(ws, "notification"))["notification"]["id"] == nid
    await ctx.reaches("notifications_created_total", created + 1, priority="high")
    await ctx.reaches("notifications_delivered_total", handed + 1, channel="websocket", priority="high")
    await ctx.reaches("notification_delivery_latency_seconds_count", latency + 1, channel="websocket", priority="high")
    await ctx.reaches("websocket_dispatch_batch_size_count", batches + 1)
    await ctx.reaches("websocket_notifications_delivered_total", written + 1, priority="high", via="live")
    await ctx.reaches("websocket_delivery_latency_seconds_count", on_socket + 1, priority="high", via="live")
    await ws.close()

    async def closed() -> bool:
        return await ctx.value("active_websocket_connections") == connections

    await eventually(closed, what="the gauge back down after the socket closed")


@moves("notifications_deferred_total", "pending_notifications_count")
async def offline_user(ctx: Ctx) -> None:
    # Deferred: nobody holds the user. Pending: a delayed notification is counted until it is
    # deleted (or delivered).
    user = ctx.user("bea")
    deferred = await ctx.value("notifications_deferred_total", channel="websocket")
    away = await ctx.publish(user, "medium", title="While away", channels=["websocket"])
    await ctx.reaches("notifications_deferred_total", deferred + 1, channel="websocket")

    # The baseline counts every pending notification published so far. The worker counts the
    # deferral before the projector need have applied the acceptance ("While away" stays
    # pending), and earlier scenarios' notifications may still be on their way too: read
    # before them, the baseline is short and the deletion below never brings the count to it.
    await ctx.projected(user, away, "pending")
    await ctx.projected_everything()
    pending = await ctx.value("pending_notifications_count")
    later = format_time(datetime.now(UTC) + timedelta(hours=1))
    nid = await ctx.publish(user, "medium", title="Tomorrow", channels=["websocket"], deliver_after=later)
    await ctx.projected(user, nid, "pending")
    await ctx.reaches("pending_notifications_count", pending + 1)
    reply = await ctx.api(user).delete(f"/api/notifications/{nid}")
    assert reply.status == 204

    async def gone() -> bool:
        return await ctx.value("pending_notifications_count") <= pending

    await eventually(gone, what="the deleted notification no longer counted as pending")


@moves("notifications_rejected_total", "notifications_dead_lettered_total")
async def undecodable_request(ctx: Ctx) -> None:
    topic = ctx.names.request("low")
    rejected = await ctx.value("notifications_rejected_total", priority="low")
    dead = await ctx.value("notifications_dead_lettered_total", source_topic=topic)
    await publish(ctx.settings.kafka_bootstrap, topic, [(b"eve", b"{not json")])
    await ctx.reaches("notifications_rejected_total", rejected + 1, priority="low")
    await ctx.reaches("notifications_dead_lettered_total", dead + 1, source_topic=topic)


@moves("notifications_deduplicated_total")
async def repeated_request(ctx: Ctx) -> None:
    user = ctx.user("fay")
    before = await ctx.value("notifications_deduplicated_total", priority="medium")
    body = request(user, "Once", priority="medium", channels=["websocket"])
    record = (user.encode(), json.dumps(body).encode())
    await publish(ctx.settings.kafka_bootstrap, ctx.names.request("medium"), [record, record])
    await ctx.reaches("notifications_deduplicated_total", before + 1, priority="medium")


@moves("notifications_rate_limited_total")
async def over_the_rate_limit(ctx: Ctx) -> None:
    user = ctx.user("gil")
    before = await ctx.value("notifications_rate_limited_total", priority="low")
    for n in range(LOW_RATE_LIMIT + 1):
        await ctx.publish(user, "low", title=f"n{n}", channels=["websocket"])
    await ctx.reaches("notifications_rate_limited_total", before + 1, priority="low")


@moves("notifications_expired_total")
async def expired_before_routing(ctx: Ctx) -> None:
    before = await ctx.value("notifications_expired_total", channel="all")
    past = format_time(datetime.now(UTC) - timedelta(minutes=1))
    await ctx.publish(ctx.user("hal"), "medium", title="Too late", channels=["websocket"], expires_at=past)
    await ctx.reaches("notifications_expired_total", before + 1, channel="all")


@moves(
    "notifications_failed_total",
    "notifications_abandoned_total",
    "apns_tokens_invalidated_total",
)
async def unregistered_device(ctx: Ctx) -> None:
    user = ctx.user("ivy")
    token = await ctx.device(user)
    ctx.emulator.unregister(token)
    failed = await ctx.value("notifications_failed_total", channel="apns", priority="high")
    abandoned = await ctx.value("notifications_abandoned_total", channel="apns", priority="high")
    invalid = await ctx.value("apns_tokens_invalidated_total", reason="Unregistered")
    await ctx.publish(user, "high", title="To a dead phone", channels=["apns"])
    await ctx.reaches("apns_tokens_invalidated_total", invalid + 1, reason="Unregistered")
    await ctx.reaches("notifications_failed_total", failed + 1, channel="apns", priority="high")
    await ctx.reaches("notifications_abandoned_total", abandoned + 1, channel="apns", priority="high")


@moves("notification_delivery_retries_total")
async def provider_busy_once(ctx: Ctx) -> None:
    user = ctx.user("jon")
    token = await ctx.device(user)
    ctx.emulator.fail_next(503, count=1, token=token)
    retries = await ctx.value("notification_delivery_retries_total", channel="apns", priority="medium")
    delivered = await ctx.value("notifications_delivered_total", channel="apns", priority="medium")
    await ctx.publish(user, "medium", title="Eventually", channels=["apns"])
    await ctx.reaches("notification_delivery_retries_total", retries + 1, channel="apns", priority="medium")
    await ctx.reaches("notifications_delivered_total", delivered + 1, channel="apns", priority="medium")


@moves("notifications_duplicate_sends_suppressed_total", "notifications_sent_targets_expired_total")
async def work_record_twice(ctx: Ctx) -> None:
    user = ctx.user("kim")
    token = await ctx.device(user)
    suppressed = await ctx.value("notifications_duplicate_sends_suppressed_total", channel="apns")
    nid = await ctx.publish(user, "medium", title="Once only", channels=["apns"])
    [accepted] = await ctx.events.wait_events(1, type="notification.accepted", subject=nid)
    async with asyncio.timeout(30):
        await ctx.emulator.wait_for(1, token=token)
    sent_at = time.monotonic()
    # The same work record again, as after a crash between the send and the offset commit.
    raw = json.dumps(accepted).encode()
    await publish(ctx.settings.kafka_bootstrap, ctx.names.delivery("apns"), [(user.encode(), raw)])
    await ctx.reaches("notifications_duplicate_sends_suppressed_total", suppressed + 1, channel="apns")
    assert len([r for r in ctx.emulator.received if r.token == token]) == 1

    expired = await ctx.value("notifications_sent_targets_expired_total", channel="apns")
    await asyncio.sleep(max(0.0, sent_at + SENT_TTL + 0.5 - time.monotonic()))  # the TTL is the event here
    await ctx.publish(user, "medium", title="Later", channels=["apns"])  # the sink expires on its next record
    await ctx.reaches("notifications_sent_targets_expired_total", expired + 1, channel="apns")


@moves("notification_scheduled_pending", "notification_deliveries_cancelled_total")
async def delayed_then_read(ctx: Ctx) -> None:
    user = ctx.user("lea")
    cancelled = await ctx.value("notification_deliveries_cancelled_total", channel="websocket")
    later = format_time(datetime.now(UTC) + timedelta(hours=1))
    nid = await ctx.publish(user, "medium", title="Later", channels=["websocket"], deliver_after=later)
    await ctx.reaches("notification_scheduled_pending", 1)
    await ctx.projected(user, nid)
    reply = await ctx.api(user).patch(f"/api/notifications/{nid}/read")
    assert reply.status in (200, 204), reply.body
    await ctx.reaches("notification_deliveries_cancelled_total", cancelled + 1, channel="websocket")


@moves("ingest_priority_waits_total", "kafka_consumer_lag")
async def backlog_under_load(ctx: Ctx) -> None:
    # A backlog of valid low requests (each takes real work: admission, a decision appended),
    # then, once the low agent is working through them, high ones: the low agent yields while
    # high records are queued, and the worker's consumer lags while it works through them.
    # The high ones must come after the low ones are fetched: while a high partition lags,
    # the consumer fetches no low records at all (the consumer-side isolation).
    waits = await ctx.value("ingest_priority_waits_total", priority="low")
    decided = await decisions(ctx)
    sent = 0
    producer = AIOKafkaProducer(bootstrap_servers=ctx.settings.kafka_bootstrap, max_batch_size=16384)
    await producer.start()
    tag = uuid.uuid4().hex[:6]
    try:
        seen_lag = 0.0
        for round_ in range(10):  # each round one more chance, on a machine that schedules as it likes
            created = await ctx.value("notifications_created_total", priority="low")
            for n in range(1000):  # distinct users: within the low rate limit
                user = f"lw-{tag}-{round_}-{n}"
                low = request(user, f"l{n}", priority="low")
                await producer.send(ctx.names.request("low"), key=user.encode(), value=json.dumps(low).encode())
            await producer.flush()
            sent += 1000

            async def low_under_way(before: float = created) -> bool:
                return await ctx.value("notifications_created_total", priority="low") > before

            await eventually(low_under_way, timeout=30, interval=0.01, what="the low agent working")
            for n in range(300):
                high = request(f"u{n % 7}", f"h{n}", priority="high")
                await producer.send(
                    ctx.names.request("high"), key=f"u{n % 7}".encode(), value=json.dumps(high).encode()
                )
            await producer.flush()
            sent += 300
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                samples, _ = await ctx.scrape()
                lag = [v for lbl, v in samples.get("kafka_consumer_lag", []) if lbl["role"] == "worker"]
                seen_lag = max([seen_lag, *lag])
                if await ctx.value("ingest_priority_waits_total", priority="low") > waits and seen_lag > 0:
                    break
                await asyncio.sleep(0.02)
            if await ctx.value("ingest_priority_waits_total", priority="low") > waits and seen_lag > 0:
                break
    finally:
        await producer.stop()
    assert await ctx.value("ingest_priority_waits_total", priority="low") > waits
    assert seen_lag > 0, "the worker's consumer lag never showed the backlog"

    async def caught_up() -> bool:
        samples, _ = await ctx.scrape()
        series = samples.get("kafka_consumer_lag", [])
        roles = {lbl["role"] for lbl, _ in series}
        groups = {lbl["group"] for lbl, _ in series}
        worker_requests = [
            v for lbl, v in series if lbl["role"] == "worker" and lbl["topic"] == ctx.names.request("low")
        ]
        return (
            {"worker", "projector"} <= roles
            and {ctx.settings.app_id, ctx.settings.projector_group} <= groups
            and bool(worker_requests)
            and max(worker_requests) == 0
        )

    await eventually(caught_up, timeout=60, what="both roles' lag series, the worker's back to 0")

    # A lag of 0 says the worker has fetched every request, not that it has decided them: a
    # later scenario's baseline (the pending count) must not see these still being accepted.
    async def all_decided() -> bool:
        return await decisions(ctx) >= decided + sent

    await eventually(all_decided, timeout=120, what=f"every one of the {sent} requests decided")


async def decisions(ctx: Ctx) -> float:
    """Requests the worker has decided so far: accepted, deduplicated or refused, any priority."""
    samples, _ = await ctx.scrape()
    counters = (
        "notifications_created_total",
        "notifications_deduplicated_total",
        "notifications_rate_limited_total",
        "notifications_rejected_total",
    )
    return sum(v for name in counters for _, v in samples.get(name, []))


@moves("herald_projector_skipped_events_total")
async def poison_event(ctx: Ctx) -> None:
    before = await ctx.value("herald_projector_skipped_events_total", stage="decode")
    await publish(ctx.settings.kafka_bootstrap, ctx.names.events, [(b"zed", b"\xff not an event")])
    await ctx.reaches("herald_projector_skipped_events_total", before + 1, stage="decode")


@moves("projector_offset_gaps_reread_total", "projector_offset_gaps_accepted_total")
async def gap_in_the_log(ctx: Ctx) -> None:
    @dataclass
    class Record:
        offset: int

    reread = await ctx.value("projector_offset_gaps_reread_total")
    accepted = await ctx.value("projector_offset_gaps_accepted_total")
    reader = Contiguity(max_rereads=1)
    reader.reset(0, 10)
    assert reader.admit(0, [Record(10), Record(12)]) == ([Record(10)], 11)  # 11 missing: read again
    assert reader.admit(0, [Record(12)]) == ([Record(12)], None)  # still missing: stepped over
    await ctx.reaches("projector_offset_gaps_reread_total", reread + 1)
    await ctx.reaches("projector_offset_gaps_accepted_total", accepted + 1)


@moves("db_pool_checked_out", "db_pool_size")
async def connections_in_use(ctx: Ctx) -> None:
    assert ctx.stack.engine is not None
    size = await ctx.value("db_pool_size", pool="read-model")
    assert size >= 1
    # The stack's projector shares the pool and checks connections out on its own (up to one per
    # partition of a poll), so the count around ours moves: two held here count at least 2, and
    # once they are back the gauge drops by them (waited for: the projector may be mid-batch).
    async with ctx.stack.engine.connect(), ctx.stack.engine.connect():
        held = await ctx.value("db_pool_checked_out", pool="read-model")
        assert held >= 2

    async def released() -> bool:
        return await ctx.value("db_pool_checked_out", pool="read-model") <= held - 2

    await eventually(released, timeout=20, interval=0.1, what="the two connections back in the pool")


@moves("http_request_duration_seconds")
async def timed_by_route(ctx: Ctx) -> None:
    user = ctx.user("max")
    route = "/api/notifications/{id}"
    before = await ctx.value("http_request_duration_seconds_count", method="GET", route=route, status="404")
    nid = f"missing-{uuid.uuid4().hex}"
    reply = await ctx.api(user).get(f"/api/notifications/{nid}")
    assert reply.status == 404
    assert await ctx.value("http_request_duration_seconds_count", method="GET", route=route, status="404") == (
        before + 1
    )
    samples, _ = await ctx.scrape()
    routes = {lbl.get("route", "") for lbl, _ in samples.get("http_request_duration_seconds_count", [])}
    assert not [r for r in routes if nid in r], "a raw path became a label"
    unmatched = await ctx.value("http_request_duration_seconds_count", route="unmatched")
    async with ctx.http.get(ctx.base + f"/no/such/{nid}") as resp:
        assert resp.status == 404
    assert await ctx.value("http_request_duration_seconds_count", route="unmatched") == unmatched + 1


@moves("api_writes_rate_limited_total")
async def too_many_writes(ctx: Ctx) -> None:
    user = ctx.user("ned")
    api = ctx.api(user)
    before = await ctx.value("api_writes_rate_limited_total")
    # All at once: sent one after another on a loaded machine, the bucket refilled between
    # them and no request was ever over the limit.
    replies = await asyncio.gather(
        *(
            api.post("/api/notifications", json={"title": f"n{n}", "channels": ["websocket"]})
            for n in range(2 * WRITE_BURST)
        )
    )
    statuses = [reply.status for reply in replies]
    assert 429 in statuses, statuses
    await ctx.reaches("api_writes_rate_limited_total", before + statuses.count(429))


@moves("websocket_slow_clients_closed_total")
async def client_that_does_not_read(ctx: Ctx) -> None:
    assert ctx.stack.hub is not None
    hub = ctx.stack.hub
    user = ctx.user("olga")
    before = await ctx.value("websocket_slow_clients_closed_total")
    ws = await UserClient(ctx.http, ctx.base, ctx.settings, user).websocket()
    await missed_notifications(ws)
    blob = "x" * 65536
    pushed = 0
    while hub.connection_count(user) and pushed < 5000:  # it never reads again
        if not await hub.deliver_local(user, {"type": "notice", "text": blob}):
            break
        pushed += 1
        await asyncio.sleep(0)
    await ctx.reaches("websocket_slow_clients_closed_total", before + 1)
    await ws.close()


@moves("herald_jwks_fetch_failures_total")
async def identity_provider_down(ctx: Ctx) -> None:
    # The API's JWKS refresher against a provider that serves its keys, then goes down.
    before = await ctx.value("herald_jwks_fetch_failures_total")

    async def in_own_loop() -> None:
        public = ec.generate_private_key(ec.SECP256R1()).public_key()
        jwk = {**ECAlgorithm.to_jwk(public, as_dict=True), "kid": "k1", "alg": "ES256", "use": "sig"}
        down = asyncio.Event()

        async def jwks(request: web.Request) -> web.Response:
            return web.Response(status=503) if down.is_set() else web.json_response({"keys": [jwk]})

        app = web.Application()
        app.router.add_get("/jwks.json", jwks)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        keys = JwksKeys(f"http://127.0.0.1:{port}/jwks.json", refresh_seconds=1.0)
        try:
            await keys.start()
            assert keys.get("k1") is not None
            down.set()

            async def failed() -> bool:
                return bool(JWKS_FETCH_FAILURES._value.get() > before)

            await eventually(failed, timeout=MIN_FETCH_INTERVAL + 15, what="a failed refresh")
            assert keys.get("k1") is not None  # the keys it had are kept
        finally:
            await keys.stop()
            await runner.cleanup()

    await asyncio.to_thread(asyncio.run, in_own_loop())
    await ctx.reaches("herald_jwks_fetch_failures_total", before + 1)


@moves("websocket_dispatch_failures_total")
async def redis_unreachable(ctx: Ctx) -> None:
    before = await ctx.value("websocket_dispatch_failures_total")

    async def in_own_loop() -> None:
        dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
        dispatch = LiveDispatch(RedisDispatcher(dead, ctx.settings.topic_prefix), _ignore, retry_base=0.05)
        dispatch.start()
        try:
            await dispatch.submit(Live("pat", b'{"user_id":"pat","frame":{}}', None))

            async def failed() -> bool:
                return bool(DISPATCH_FAILURES._value.get() > before)

            await eventually(failed, timeout=10, what="a failed dispatch batch")
        finally:
            await dispatch.close(within=0.2)
            await dead.aclose()

    await asyncio.to_thread(asyncio.run, in_own_loop())
    await ctx.reaches("websocket_dispatch_failures_total", before + 1)


@moves("websocket_receipts_failed_total")
async def receipt_not_taken(ctx: Ctx) -> None:
    before = await ctx.value("websocket_receipts_failed_total")

    async def in_own_loop() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=ctx.settings.kafka_bootstrap)
        await producer.start()
        await producer.stop()  # the broker takes nothing more from it
        receipts = Receipts(Publisher(producer, ctx.names), "node-x")
        now = format_time(datetime.now(UTC))
        view = {"id": uuid.uuid4().hex, "user_id": "quinn", "priority": "low", "created_at": now}
        await receipts.delivered([view], connection="c1", via="live")
        await receipts.flush("quinn")
        await receipts.close()

    await asyncio.to_thread(asyncio.run, in_own_loop())
    await ctx.reaches("websocket_receipts_failed_total", before + 1)


async def _ignore(batch: Any) -> None:
    return None


# --- the catalogue --------------------------------------------------------------------------------


def test_the_docs_table_lists_metrics() -> None:
    names = documented_metrics()
    assert len(names) >= 30, names
    assert len(names) == len(set(names)), "a metric is listed twice"
    # The seed systems' names, kept.
    for seed in (
        "notifications_created_total",
        "notifications_delivered_total",
        "notifications_failed_total",
        "notification_delivery_latency_seconds",
        "active_websocket_connections",
        "pending_notifications_count",
    ):
        assert seed in names


@pytest.mark.parametrize("metric", documented_metrics())
async def test_documented_metric_moves_on_metrics_endpoint(metric: str, ctx: Ctx) -> None:
    scenario = SCENARIOS.get(metric)
    if scenario is None:
        pytest.fail(f"{metric} is documented in docs/observability.md but no scenario here moves it")
    name = scenario.__name__
    if name not in ctx.done:  # one run per scenario; each of its metrics reports the outcome
        try:
            await scenario(ctx)
            ctx.done[name] = None
        except BaseException as exc:
            ctx.done[name] = exc
            raise
    if ctx.done[name] is not None:
        raise AssertionError(f"scenario {name} failed") from ctx.done[name]
    _, types = await ctx.scrape()
    assert metric in types, f"{metric} is not served on /metrics"


async def test_every_served_metric_is_documented(ctx: Ctx) -> None:
    _, types = await ctx.scrape()
    documented = set(documented_metrics())
    ours = {name for name in types if not name.startswith(("python_", "process_"))}
    # prometheus_client's creation timestamps of counters and histograms (``*_created``).
    stamps = {n for n in ours if n.endswith("_created") and {n[:-8], n[:-8] + "_total"} & documented}
    assert sorted(ours - stamps - documented) == []


PROJECTOR_LAG = 0.5
"""Seconds the lagging projector waits before each transaction (``test_pending_count_with_a_lagging_projector``)."""


async def test_pending_count_with_a_lagging_projector(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    # The offline-user scenario once read its pending baseline as soon as the worker counted
    # the deferral, before the projector had applied the acceptance of the notification it
    # deferred (which stays pending): the baseline came out one short, and the deleted
    # notification was never "no longer counted". With every transaction PROJECTOR_LAG late,
    # that order is certain; the scenario holds all the same.
    projector = ctx.stack.projector
    assert projector is not None
    apply = projector._apply

    async def late(*args: Any) -> None:
        await asyncio.sleep(PROJECTOR_LAG)
        await apply(*args)

    monkeypatch.setattr(projector, "_apply", late)
    await offline_user(ctx)


async def test_herald_api_with_an_internal_metrics_port_keeps_the_gauges_fresh(ctx: Ctx, output_dir: Path) -> None:
    # A real `herald api` process on the stack's database: its internal port cannot await a
    # query per scrape, so a task refreshes pending_notifications_count; the durations, pool
    # and pending figures are all there.
    port, metrics_port = free_port(), free_port()
    settings = ctx.settings.replace(http_port=port, metrics_port=metrics_port, node_id=f"api-{port}", log_level="INFO")
    proc = start_role("api", settings, output_dir / "metrics-catalogue-api.log")
    try:
        api, metrics = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"

        async def ready() -> bool:
            try:
                async with ctx.http.get(api + "/readyz") as resp:
                    return resp.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await eventually(ready, timeout=60, interval=0.2, what="herald api ready")

        async def served() -> Samples:
            async with ctx.http.get(metrics + "/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
            out: Samples = {}
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
            return out

        def total(samples: Samples, name: str, **labels: str) -> float:
            return sum(v for lbl, v in samples.get(name, []) if labels.items() <= lbl.items())

        user = ctx.user("uma")
        async with ctx.http.get(api + "/api/notifications/nope", headers={"X-Request-ID": "probe-1"}) as resp:
            assert resp.status == 401 and resp.headers["X-Request-ID"] == "probe-1"
        first = await served()
        assert total(first, "http_request_duration_seconds_count", route="/api/notifications/{id}", status="401") == 1
        assert total(first, "db_pool_size", pool="read-model") >= 1
        pending = total(first, "pending_notifications_count")

        later = format_time(datetime.now(UTC) + timedelta(hours=1))
        nid = await ctx.publish(user, "medium", title="Later", channels=["websocket"], deliver_after=later)
        await ctx.projected(user, nid, "pending")

        async def refreshed() -> float | None:
            value = total(await served(), "pending_notifications_count")
            return value if value >= pending + 1 else None

        await eventually(refreshed, timeout=20, what="the internal port's pending count refreshed")
    finally:
        stop_role(proc)
