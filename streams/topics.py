"""Faust topic objects, declared once per app from ``engine.topics.TopicNames``."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from engine.priority import ALL_CHANNELS, Priority
from engine.settings import Settings
from engine.topics import TopicNames


@dataclass(frozen=True, slots=True)
class Topics:
    """The app's topics; values and keys are raw bytes (the codec is ours, not Faust's)."""

    names: TopicNames
    requests: dict[Priority, faust.TopicT]
    events: faust.TopicT
    deliveries: dict[str, faust.TopicT]
    deadletter: faust.TopicT
    scheduled: faust.TopicT


def declare(app: faust.App, settings: Settings) -> Topics:
    """Declare every topic on ``app`` with the configured partition count."""
    names = TopicNames(settings.topic_prefix)

    def topic(name: str) -> faust.TopicT:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
        )

    return Topics(
        names=names,
        requests={p: topic(names.request(p)) for p in Priority},
        events=topic(names.events),
        deliveries={c: topic(names.delivery(c)) for c in ALL_CHANNELS},
        deadletter=topic(names.deadletter),
        scheduled=topic(names.scheduled),
    )
