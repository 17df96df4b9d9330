"""Topic creation at start-up, so producers never auto-create a topic with the wrong partition count."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from engine.settings import Settings
from engine.topics import TopicNames

log = logging.getLogger(__name__)


async def ensure_topics(settings: Settings) -> None:
    """Create every Herald topic that does not exist yet (idempotent)."""
    names = TopicNames(settings.topic_prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in names.all if t not in existing]
        if not missing:
            return
        new = [
            NewTopic(
                name=t,
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication,
                # The event log is the source of truth: never delete from it.
                topic_configs={"retention.ms": "-1"} if t == names.events else {},
            )
            for t in missing
        ]
        try:
            await admin.create_topics(new)
        except TopicAlreadyExistsError:
            log.info("topics created concurrently by another process")
        log.info("created topics", extra={"topics": missing})
    finally:
        await admin.close()
