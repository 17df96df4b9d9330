"""Composition of Herald's roles (worker, projector, api) inside one event loop.

``herald dev`` runs all three with in-process presence; production runs one role per
process with Redis presence; tests run whichever they need against real services.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import faust
import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app as create_http_app
from api.auth import TokenVerifier
from api.publisher import Publisher
from api.ws.gateway import Hub
from api.ws.presence import LocalPresence, Presence, RedisPresence
from api.ws.receipts import Receipts
from api.ws.replay import LogPosition, Replay
from engine.gc_tuning import tune_gc
from engine.settings import Settings
from engine.topics import TopicNames
from herald.startup import redacted, until_reachable
from herald.supervisor import Supervisor
from projections.database import create_engine, migrate
from projections.gauges import watch_pool
from projections.inbox import Inbox
from projections.projector import Projector
from projections.queries import NotificationQueries
from streams.admin import ensure_topics
from streams.app import check_ready, worker_app_id
from streams.app import create_app as create_faust_app
from streams.app import tune_gc as tune_worker_gc
from streams.channels import configured_sinks
from streams.consumer_lag import faust_client
from streams.consumer_lag import watch as watch_lag
from streams.delivery_attempt import Sink
from streams.topics import Topics
from streams.websocket_dispatch import Dispatcher, RedisDispatcher

log = logging.getLogger(__name__)

API_GC_YOUNG_THRESHOLD = 10_000
"""Allocations between two young collections in the api (Python's default is 700), as the worker's
``streams.app.GC_YOUNG_THRESHOLD``: its full collections walked the start-up heap too, pausing every
connection 50-110 ms in a burst (``benchmarks.throughput --stages``)."""


class HubDispatcher:
    """In-process adapter of the sink's ``Dispatcher`` port: calls this process's hub directly."""

    def __init__(self, hub: Hub, node_id: str) -> None:
        self._hub = hub
        self._node_id = node_id

    async def dispatch(self, user_id: str, frame: Any) -> list[str]:
        """Deliver to local connections; the node counts as reached if any took the frame."""
        return [self._node_id] if await self._hub.deliver_local(user_id, dict(frame)) else []

    async def dispatch_many(self, items: Sequence[tuple[str, bytes]]) -> list[list[str]]:
        """The batch form: each item is a rendered pub/sub message, as Redis would carry it."""
        out = []
        for user_id, message in items:
            frame = orjson.loads(message)["frame"]
            out.append([self._node_id] if await self._hub.deliver_local(user_id, frame) else [])
        return out


def node_id(settings: Settings) -> str:
    """This process's gateway node id."""
    return settings.node_id or f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Stack:
    """What is running; tests reach into it (e.g. the API port, the Faust app)."""

    settings: Settings
    engine: AsyncEngine | None = None
    hub: Hub | None = None
    publisher: Publisher | None = None
    http_port: int | None = None
    http_app: web.Application | None = None
    faust_app: faust.App | None = None
    topics: Topics | None = None
    projector: Projector | None = None
    redis: Redis | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    supervisor: Supervisor = field(default_factory=Supervisor)
    """Failures of background work (``herald.supervisor``): fail ``/readyz``, end the CLI roles."""


@contextlib.asynccontextmanager
async def run_stack(
    settings: Settings,
    *,
    worker: bool = True,
    projector: bool = True,
    api: bool = True,
    sinks: Sequence[Sink] = (),
) -> AsyncIterator[Stack]:
    """Start the requested roles; stop them all on exit. ``sinks``: channels on the generic retry path."""
    stack = Stack(settings=settings)
    stopping = asyncio.Event()
    node = node_id(settings)
    # Before anything starts a task: components' long-lived tasks are watched from birth.
    stack.supervisor.install(asyncio.get_running_loop())
    async with contextlib.AsyncExitStack() as exits:
        exits.callback(stack.supervisor.uninstall)  # a failed start-up too
        if settings.redis_url:
            # A blocking pool: a burst of WebSocket connects waits for a Redis connection
            # instead of failing (redis-py's default pool raises past 100 in use).
            pool = BlockingConnectionPool.from_url(
                settings.redis_url, decode_responses=True, max_connections=100, timeout=10
            )
            stack.redis = Redis.from_pool(pool)
            exits.push_async_callback(stack.redis.aclose)
        elif worker != api:
            raise RuntimeError("HERALD_REDIS_URL is required when the worker and the API run in separate processes")
        # Dependencies may come up after the role: each start-up step that needs one waits
        # for it with backoff, one log line per attempt (herald.startup), instead of exiting.
        await until_reachable("broker", settings.kafka_bootstrap, lambda: ensure_topics(settings))
        if stack.redis is not None and (worker or api):
            redis_client = stack.redis
            await until_reachable("redis", redacted(settings.redis_url), lambda: _redis_check(redis_client))
        if projector or api:
            stack.engine = create_engine(settings.database_url)
            exits.push_async_callback(stack.engine.dispose)
            watch_pool(stack.engine, "read-model")  # db_pool_* on /metrics
            engine_ = stack.engine
            await until_reachable("database", redacted(settings.database_url), lambda: migrate(engine_))
        if api:
            verifier = TokenVerifier(settings)
            presence: Presence = (
                RedisPresence(stack.redis, settings.topic_prefix, node, settings.presence_ttl_seconds)
                if stack.redis
                else LocalPresence(node, settings.presence_ttl_seconds)
            )
            producer = AIOKafkaProducer(
                bootstrap_servers=settings.kafka_bootstrap,
                max_batch_size=settings.producer_max_batch_size,
                linger_ms=settings.producer_linger_ms,
            )
            await producer.start()
            exits.push_async_callback(producer.stop)
            stack.publisher = Publisher(producer, TopicNames(settings.topic_prefix))
            engine = _required(stack.engine, "database engine")
            stack.hub = await _start_hub(settings, verifier, presence, stack.publisher, engine, exits)
            queries = NotificationQueries(engine)
            checks: dict[str, Callable[[], Awaitable[None]]] = {
                "database": queries.ping,
                "broker": lambda: _broker_check(producer, settings),
                "tasks": lambda: _supervisor_check(stack.supervisor),
            }
            if stack.redis is not None:
                redis = stack.redis
                checks["redis"] = lambda: _redis_check(redis)
            if worker:
                # Same process: not ready until the agents hold their partitions.
                async def worker_check() -> None:
                    if stack.faust_app is None:
                        raise RuntimeError("worker not started yet")
                    check_ready(stack.faust_app)

                checks["worker"] = worker_check
            http = create_http_app(
                verifier=verifier,
                queries=queries,
                hub=stack.hub,
                checks=checks,
                publisher=stack.publisher,
                settings=settings,
                engine=engine,
            )
            stack.http_app = http
            runner = web.AppRunner(http, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, settings.http_host, settings.http_port)
            await site.start()
            exits.push_async_callback(runner.cleanup)
            stack.http_port = runner.addresses[0][1]
            log.info("api listening", extra={"url": f"http://{settings.http_host}:{stack.http_port}"})
            tune_gc(API_GC_YOUNG_THRESHOLD)  # the started api's heap frozen out of collections, fewer young ones
        if projector:
            stack.projector = Projector(settings, _required(stack.engine, "database engine"))
            running = stack.projector  # kafka_consumer_lag{role="projector"} on /metrics
            exits.callback(
                watch_lag("projector", settings.projector_group, lambda: getattr(running, "_consumer", None))
            )
            task = asyncio.create_task(stack.projector.run(stopping), name="projector")
            stack.supervisor.watch(task, "projector")
            stack.tasks.append(task)
        if worker:
            dispatcher: Dispatcher
            if stack.redis is not None:
                redis_dispatcher = RedisDispatcher(stack.redis, settings.topic_prefix)
                exits.push_async_callback(redis_dispatcher.close)  # its kept connection, back to the pool
                dispatcher = redis_dispatcher
            else:
                dispatcher = HubDispatcher(_required(stack.hub, "gateway hub"), node)
            # Explicit sinks (tests) win; otherwise the channels configured in settings.
            sinks = tuple(sinks) or tuple(configured_sinks(settings))
            for sink in sinks:
                closer = getattr(sink, "close", None)
                if closer is not None:
                    exits.push_async_callback(closer)
            stack.faust_app, stack.topics = create_faust_app(settings, dispatcher=dispatcher, sinks=sinks)
            await stack.faust_app.start()
            tune_worker_gc()  # the started worker's heap frozen out of collections, fewer young ones
            exits.callback(watch_lag("worker", worker_app_id(settings), faust_client(stack.faust_app)))
            exits.push_async_callback(stack.faust_app.stop)
            stack.supervisor.watch_faust(stack.faust_app)
        try:
            yield stack
        finally:
            stack.supervisor.uninstall()  # what ends from here on ends on purpose
            stopping.set()
            for task in stack.tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, 10)


async def _start_hub(
    settings: Settings,
    verifier: TokenVerifier,
    presence: Presence,
    publisher: Publisher,
    engine: AsyncEngine,
    exits: contextlib.AsyncExitStack,
) -> Hub:
    """The WebSocket gateway with its replay (inbox + event-log position) and delivery receipts."""
    inbox = Inbox(engine)
    position = LogPosition(settings, inbox)
    await position.start()
    exits.push_async_callback(position.stop)
    replay = Replay(inbox, position, batch_size=settings.ws_replay_batch_size, wait=settings.ws_replay_wait_seconds)
    receipts = Receipts(publisher, presence.node_id, linger=settings.ws_receipt_linger_ms / 1000)
    hub = Hub(settings, verifier, presence, receipts=receipts, replay=replay, inbox=inbox)
    await hub.start()
    exits.push_async_callback(hub.close)
    return hub


async def _broker_check(producer: AIOKafkaProducer, settings: Settings) -> None:
    await asyncio.wait_for(producer.partitions_for(TopicNames(settings.topic_prefix).events), 5)


async def _redis_check(redis: Redis) -> None:
    await asyncio.wait_for(redis.ping(), 5)


async def _supervisor_check(supervisor: Supervisor) -> None:
    supervisor.check()


T = TypeVar("T")


def _required(value: T | None, what: str) -> T:
    """``value``, which the role wiring above guarantees; a clear error if it ever does not."""
    if value is None:
        raise RuntimeError(f"internal wiring error: {what} missing")
    return value
