"""The Faust application factory: one app per worker process (or per test)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition

from engine import gc_tuning
from engine.priority import Priority
from engine.settings import Settings
from engine.topics import TopicNames, groups_ingesting, worker_group
from streams import delivery_attempt, ingest, scheduler, websocket_sink
from streams.consumer import install_fetch_wait
from streams.dead_letters import header_items
from streams.device_registry import ContactsOnly, DeviceRegistry, contacts_changelog
from streams.device_registry import _maybe_relevant as registry_may_need
from streams.internals import check_internals, consumer_skipping, flush_first
from streams.live_dispatch import LiveDispatch
from streams.topics import Topics, declare
from streams.websocket_dispatch import Dispatcher

log = logging.getLogger(__name__)

GC_YOUNG_THRESHOLD = 10_000
"""Allocations between two collections of the youngest generation in a worker (Python's default is
700). A request allocates a few dozen short-lived objects, nearly all freed by their reference
counts; with the default, the young collections and the promotions they cause took about 12 us
of CPU per notification in a burst (``benchmarks.throughput --stages``). Lower than the
projector's (``projections.projector.GC_YOUNG_THRESHOLD``): each collection is a pause of every
notification in flight, and these stay short at this size."""


def tune_gc() -> None:
    """Fewer and shorter garbage collections in a worker, once its app has started (``engine.gc_tuning``).

    What is alive then (modules, Faust's app, agents, tables as recovered) is frozen out of every
    later collection: a full collection, which walked all of it (20 ms in a burst), walks only
    what came after. The youngest generation is collected after ``GC_YOUNG_THRESHOLD`` allocations.
    """
    gc_tuning.tune_gc(GC_YOUNG_THRESHOLD)


def create_app(
    settings: Settings, *, dispatcher: Dispatcher, sinks: Sequence[delivery_attempt.Sink] = ()
) -> tuple[faust.App, Topics]:
    """Build the Faust app with every agent installed; the caller starts and stops it.

    ``sinks`` are the channels on the generic retry path (email, APNs): one agent each.
    """
    app = faust.App(
        worker_app_id(settings),
        broker=[f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",")],
        store="memory://",
        datadir=str(faust_datadir(worker_app_id(settings))),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        producer_max_batch_size=settings.producer_max_batch_size,
        producer_linger=settings.producer_linger_ms / 1000,
        # A poll is delivered to the agents' buffers before the next one: a small poll lets a
        # high-priority record through soon, instead of after a whole batch of a low backlog.
        broker_max_poll_records=settings.kafka_max_poll_records,
        broker_session_timeout=settings.kafka_session_timeout,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval,
        broker_rebalance_timeout=settings.kafka_rebalance_timeout,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        # Herald configures logging itself (JSON); Faust must not replace the handlers.
        loghandlers=[],
    )
    check_internals()  # fails loudly, naming the attribute, if a Faust/aiokafka upgrade dropped one we use
    install_fetch_wait(
        app,
        settings.kafka_fetch_max_wait_ms,
        sparse_topics={TopicNames(settings.topic_prefix).events},
        sparse_interval_ms=settings.kafka_event_log_fetch_interval_ms,
    )
    topics = declare(app, settings)
    live = websocket_sink.live_dispatch(topics, dispatcher)
    _commit_after_live_frames(app, live)
    # Routing honours each user's contact preferences: the worker folds contact.updated from
    # the log in the registry the sinks share, or, when it runs no sink, copies the sink
    # group's contacts (``ContactsOnly``: its consumer then never fetches the log).
    sinking = runs_sinks(settings)
    registry = _registry(sinks) if sinking else ContactsOnly(contacts_changelog(sink_app_id(settings)))
    registry.bind(app, topics, settings.topic_partitions)
    ingest.install(app, topics, settings, live, registry.preferences)
    if sinking:
        scheduler.install(app, topics, settings)
        websocket_sink.install(app, topics, live)
        for sink in sinks:
            delivery_attempt.install(app, topics, settings, sink)
    elif sinks:
        log.info(
            "channel sinks not run here: they run in the worker that ingests low",
            extra={"priorities": ",".join(settings.worker_priorities)},
        )
    _skip_events_no_agent_needs(app, topics)
    app.finalize()
    return app, topics


REGISTRY_AGENT = "herald.device-registry"


def runs_sinks(settings: Settings) -> bool:
    """Whether this worker runs the channel sinks, the WebSocket sink and the scheduler.

    Exactly the worker that ingests ``low`` does: however the three priorities are split
    between workers (each ingested by one group), one group runs them, never two or none.
    """
    return Priority.LOW in settings.worker_priorities


def sink_app_id(settings: Settings) -> str:
    """The app id of the worker group that runs the sinks (the one ingesting ``low``: ``HERALD_APP_ID``)."""
    return worker_group(settings.app_id, (Priority.LOW.value,))


def faust_datadir(app_id: str) -> Path:
    """Faust's data directory of an app: empty with Herald's in-memory table stores, one per app id."""
    return Path(tempfile.gettempdir()) / f"herald-faust-{app_id}"


def remove_faust_datadirs(app_ids: Iterable[str]) -> None:
    """Remove the data directories of ``app_ids`` and of their split workers (ids with a suffix)."""
    for app_id in app_ids:
        for path in faust_datadir(app_id).parent.glob(f"{faust_datadir(app_id).name}*"):
            shutil.rmtree(path, ignore_errors=True)


def worker_app_id(settings: Settings) -> str:
    """The Faust app id, and so the consumer group and the tables' changelog topics, of this worker.

    The worker that runs the sinks keeps ``HERALD_APP_ID``: its scheduler agenda, device
    registry, sent records and delivery offsets stay where an unsplit deployment left them.
    A worker of a subset without ``low`` gets the id suffixed with its priorities
    (``herald-high``): its own consumer group and its own admission table (``herald-dedupe``)
    changelog, never partitions of another group's table.
    """
    return worker_group(settings.app_id, settings.worker_priorities)


async def take_over_request_offsets(settings: Settings) -> dict[str, int]:
    """Start this worker's group, on a request partition it never consumed, where another group left off.

    When a deployment is split (``herald-high`` takes ``requests.high`` from the ``herald``
    group), the new group has no committed offsets: without this it would read the topic
    from its oldest record and decide again what the other group already decided. For each
    partition of this worker's request topics on which its own group has committed nothing,
    the furthest offset another group that may have ingested the priority committed is
    committed to this group before the app starts. Partitions this group already consumed
    are left alone (going back to an unsplit deployment: docs/deployment.md). Returns what
    it committed, ``topic:partition -> offset``.
    """
    names = TopicNames(settings.topic_prefix)
    own = worker_app_id(settings)
    consumers: dict[str, AIOKafkaConsumer] = {}

    async def consumer(group: str) -> AIOKafkaConsumer:
        if group not in consumers:
            client = AIOKafkaConsumer(
                bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False
            )
            try:
                await client.start()
            except BaseException:
                # A broker not up yet is waited for by the caller's backoff: close what start()
                # opened, or the client is collected unclosed (an ERROR line per attempt).
                await client.stop()
                raise
            consumers[group] = client
        return consumers[group]

    moved: dict[TopicPartition, int] = {}
    try:
        mine = await consumer(own)
        for priority in settings.worker_priorities:
            others = sorted(groups_ingesting(settings.app_id, priority) - {own})
            for partition in range(settings.topic_partitions):
                tp = TopicPartition(names.request(priority), partition)
                if await mine.committed(tp) is not None:
                    continue
                theirs = [await (await consumer(group)).committed(tp) for group in others]
                furthest = max((offset for offset in theirs if offset is not None), default=None)
                if furthest is not None:
                    moved[tp] = furthest
        if moved:
            mine.assign(list(moved))
            await mine.commit(dict(moved))
            log.info(
                "request offsets taken over from another priority group",
                extra={"group": own, "partitions": len(moved)},
            )
    finally:
        for client in consumers.values():
            await client.stop()
    return {f"{tp.topic}:{tp.partition}": offset for tp, offset in moved.items()}


def _skip_events_no_agent_needs(app: faust.App, topics: Topics) -> None:
    """Ack, without delivering, the records of ``herald.events`` that the device registry passes over.

    The registry is the worker's only reader of the log and folds only device and contact
    events: most of the log (two to three events per notification) is about notifications.
    Its own pre-filter (by the ``ce_type`` header) now runs before Faust's per-record
    machinery (``streams.internals.consumer_skipping``) instead of after it. Raises if
    another agent reads the log, since it would miss those records; does nothing in a worker
    that does not read the log (one without sinks: ``ContactsOnly``).
    """
    events = topics.names.events
    readers = sorted(agent.name for agent in app.agents.values() if events in agent.channel.topics)
    if not readers:
        return
    if readers != [REGISTRY_AGENT]:
        raise RuntimeError(f"{events} is read by {readers}, not only by {REGISTRY_AGENT}: cannot skip records")

    def needed(message: faust.types.Message) -> bool:
        return registry_may_need(message.value, header_items(message.headers))

    app.transport.Consumer = consumer_skipping(app.transport.Consumer, {events: needed})  # type: ignore[misc]


def _registry(sinks: Sequence[delivery_attempt.Sink]) -> DeviceRegistry:
    """The device registry the sinks share, or a new one."""
    for sink in sinks:
        registry = getattr(sink, "registry", None)
        if isinstance(registry, DeviceRegistry):
            return registry
    return DeviceRegistry()


def _commit_after_live_frames(app: faust.App, live: LiveDispatch) -> None:
    """Make every offset commit wait for the live frames queued so far.

    Faust flushes its producer before it commits input offsets; the frames waiting in
    ``live`` are output of those inputs too, so the flush waits for them first. Without
    this a crash could commit a request whose frame never left the worker.
    """
    flush_first(app.producer, live.drained)

    async def close_live(sender: Any, *args: Any, **_: Any) -> None:
        await live.close()

    app.on_before_shutdown.connect(close_live)  # type: ignore[arg-type]


def check_ready(app: faust.App) -> None:
    """Raise unless the worker holds partitions and is not rebalancing (for ``/readyz``)."""
    if app.rebalancing:
        raise RuntimeError("worker is rebalancing")
    if not app.consumer.assignment():
        raise RuntimeError("worker has no partitions assigned yet")
