"""Missed-notification replay: wait until the projections have seen the user's events, then page.

Why wait: the WebSocket sink may have deferred a notification a moment before this
connection joined presence, and the projector may not have written it yet. The user's
events all live in one event-log partition (keyed by user), so once the projector has
passed that partition's end offset as of the join, everything deferred before the join
is in the inbox.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from engine.settings import Settings
from engine.topics import TopicNames
from projections.inbox import Inbox

log = logging.getLogger(__name__)


class LogPosition:
    """End offsets of the event log (a group-less consumer) against the projector's checkpoint."""

    def __init__(self, settings: Settings, inbox: Inbox) -> None:
        self._settings = settings
        self._inbox = inbox
        self.topic = TopicNames(settings.topic_prefix).events
        self._consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
        self._partitions = settings.topic_partitions
        self._projected: dict[int, int] = {}
        self._waiters: dict[int, list[tuple[int, asyncio.Future[None]]]] = {}
        self._pollers: dict[int, asyncio.Task[None]] = {}

    async def start(self) -> None:
        """Connect and learn the event log's partition count."""
        await self._consumer.start()
        await self._consumer.topics()
        known = self._consumer.partitions_for_topic(self.topic)
        if known:
            self._partitions = len(known)

    async def stop(self) -> None:
        """Stop polling and disconnect."""
        for task in list(self._pollers.values()):
            task.cancel()
        await self._consumer.stop()

    def partition_of(self, user_id: str) -> int:
        """The partition producers' default (murmur2) partitioner gives the key ``user_id``."""
        return int(murmur2(user_id.encode()) & 0x7FFFFFFF) % self._partitions

    async def caught_up(self, user_id: str, *, within: float) -> bool:
        """Wait (at most ``within`` s) until the projector has applied the user's partition up to now."""
        partition = self.partition_of(user_id)
        tp = TopicPartition(self.topic, partition)
        end = (await self._consumer.end_offsets([tp]))[tp]
        if self._projected.get(partition, -1) >= end:
            return True  # already seen past it: checkpoints only move forward
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(partition, []).append((end, waiter))
        if partition not in self._pollers:
            self._pollers[partition] = asyncio.create_task(
                self._poll(partition), name=f"projector-position-{partition}"
            )
        try:
            await asyncio.wait_for(asyncio.shield(waiter), within)
        except TimeoutError:
            log.warning("projector behind; replaying what it has", extra={"user_id": user_id, "partition": partition})
            return False
        finally:
            waiting = self._waiters.get(partition, [])
            if (end, waiter) in waiting:
                waiting.remove((end, waiter))
        return True

    async def _poll(self, partition: int) -> None:
        # One poller per partition however many connections wait on it: a reconnect storm
        # costs one checkpoint query per 20 ms, not one per waiting client.
        try:
            while self._waiters.get(partition):
                try:
                    position = await self._inbox.projected_offset(self.topic, partition)
                except Exception:  # waiters time out on their own; keep polling
                    log.exception("reading the projector checkpoint failed", extra={"partition": partition})
                    position = self._projected.get(partition, 0)
                self._projected[partition] = max(position, self._projected.get(partition, 0))
                for end, waiter in list(self._waiters[partition]):
                    if end <= position and not waiter.done():
                        waiter.set_result(None)
                await asyncio.sleep(0.02)
        finally:
            self._pollers.pop(partition, None)


class Replay:
    """Pages of what ``user_id`` missed, oldest first, in bounded batches."""

    def __init__(self, inbox: Inbox, position: LogPosition | None, *, batch_size: int, wait: float) -> None:
        self._inbox = inbox
        self._position = position
        self._batch_size = batch_size
        self._wait = wait

    async def catch_up(self, user_id: str) -> None:
        """Wait (bounded) until the inbox holds every event of ``user_id`` appended so far."""
        if self._position is not None:
            await self._position.caught_up(user_id, within=self._wait)

    async def cursor(self, user_id: str, since: str) -> int | None:
        """Position of the client's last-seen notification; ``None`` if unknown or not the user's."""
        return await self._inbox.seq_of(user_id, since)

    async def pages(self, user_id: str, after: int | None) -> AsyncIterator[tuple[list[dict[str, Any]], bool]]:
        """Yield ``(notifications, more)``, at least one (possibly empty) page.

        With a cursor (``after``), every live notification after it; without, the
        WebSocket-undelivered ones.
        """
        since_mode = after is not None
        while True:
            page = await self._inbox.missed(
                user_id, after=after, since_mode=since_mode, limit=self._batch_size, now=datetime.now(UTC)
            )
            more = page.next_after is not None
            yield page.items, more
            if not more:
                return
            after = page.next_after
