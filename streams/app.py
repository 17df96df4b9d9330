"""The Faust application factory: one app per worker process (or per test)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import faust

from engine.settings import Settings
from streams import ingest, router, websocket_sink
from streams.topics import Topics, declare
from streams.websocket_dispatch import Dispatcher


def create_app(settings: Settings, *, dispatcher: Dispatcher) -> tuple[faust.App, Topics]:
    """Build the Faust app with every agent installed; the caller starts and stops it."""
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",")],
        store="memory://",
        datadir=str(Path(tempfile.gettempdir()) / f"herald-faust-{settings.app_id}"),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        producer_max_batch_size=settings.producer_max_batch_size,
        broker_session_timeout=settings.kafka_session_timeout,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval,
        broker_rebalance_timeout=settings.kafka_rebalance_timeout,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        # Herald configures logging itself (JSON); Faust must not replace the handlers.
        loghandlers=[],
    )
    topics = declare(app, settings)
    ingest.install(app, topics, settings)
    router.install(app, topics)
    websocket_sink.install(app, topics, dispatcher)
    app.finalize()
    return app, topics
