"""The API's way into Kafka: requests to the priority topics, facts to the event log.

A ``notification.read`` or ``notification.deleted`` goes out with the scheduler's
``cancel`` command for the notification's pending work (email fallback, ``deliver_after``,
retries), sent in flight together with the fact: the worker does not re-read the log to
find them. If the API dies between the two, at worst a fallback is still sent for a
notification that was read: never the other way round (nothing is lost).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from engine.partitioning import KeyPartitions
from engine.priority import Priority
from engine.schedule import CANCELLING_TYPES, cancel_command
from engine.topics import TopicNames
from schemas.codec import encode, envelope_to_dict
from schemas.envelope import Envelope


@dataclass(frozen=True, slots=True)
class Written:
    """Where a record landed: what read-your-writes waits for."""

    topic: str
    partition: int
    offset: int


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a microsecond more per receipt
class Encoded:
    """A fact already written as its record's value (the bytes ``encode`` gives its envelope), with the
    attributes a log line names. Never a fact with a scheduler cancel (a read, a delete)."""

    type: str
    userid: str
    subject: str
    correlationid: str | None
    value: bytes


@dataclass(frozen=True, slots=True)
class Sending:
    """Facts handed to the producer together: ``sent`` resolves once the broker took them all."""

    sent: asyncio.Future[Any]
    envelopes: list[Envelope | Encoded]


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A record to produce as it is: the console re-drives a dead letter with it."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    partition: int | None = None
    """``None``: the partitioner chooses by key."""


class Publisher:
    """Appends envelopes keyed by user and waits for the broker's acknowledgement."""

    def __init__(self, producer: AIOKafkaProducer, names: TopicNames) -> None:
        self._producer = producer
        self.names = names
        self._keys = KeyPartitions()

    def partition(self, topic: str, key: bytes) -> int | None:
        """The partition the producer's default partitioner gives ``key`` in ``topic``, worked out here
        (``engine.partitioning``: a faster murmur2, a key's hash remembered); ``None`` (the producer
        partitions itself, after waiting for them) while the topic's partitions are not known yet."""
        partitions = self._producer.client.cluster.partitions_for_topic(topic)
        if not partitions:
            return None
        return self._keys.choose(key, partitions)

    async def _send_keyed(self, topic: str, key: bytes, value: bytes) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = await self._producer.send(
            topic, key=key, value=value, partition=self.partition(topic, key)
        )
        return fut

    async def request(self, env: Envelope, priority: Priority) -> Written:
        """Publish a ``notification.requested`` to its priority topic."""
        return await self._send(self.names.request(priority), env)

    async def append(self, envelopes: Iterable[Envelope]) -> list[Written]:
        """Append facts (``notification.read``, ``device.registered``, ...) to the event log."""
        written = []
        for env in envelopes:
            cancel = await self._cancel_for(env)
            written.append(await self._send(self.names.events, env))
            if cancel is not None:
                await cancel
        return written

    async def enqueue(self, env: Envelope) -> asyncio.Future[Any]:
        """Start appending one fact to the event log; the future resolves on the broker's ack.

        For hot paths (the gateway's delivery receipts): records queue up and leave in
        batches instead of one round trip each.
        """
        cancel = await self._cancel_for(env)
        fut = await self._send_keyed(self.names.events, (env.userid or "").encode(), encode(env))
        if cancel is None:
            return fut
        return asyncio.ensure_future(_both(fut, cancel))

    async def enqueue_many(self, envelopes: Sequence[Envelope | Encoded]) -> list[Sending]:
        """``enqueue`` for many facts, in order: one record batch per partition instead of a send each.

        For the gateway's delivery receipts, which leave in bulk: each record is added to its
        partition's batch (``AIOKafkaProducer.create_batch``) without the per-record checks,
        serialisation and future of ``AIOKafkaProducer.send``, and each batch is handed to the
        producer once. Records of one partition keep their order, and so do a partition's records
        around a fact sent the way ``enqueue`` sends it: one with a scheduler cancel (a read, a
        delete), or any while the topic's partitions are not known yet. Each ``Sending`` resolves
        on the broker's acknowledgement of its envelopes; a batch the producer refused is
        returned with the error set on its future (never raised: the others may be in flight).
        """
        topic = self.names.events
        out: list[Sending] = []
        open_batches: dict[int, tuple[Any, list[Envelope | Encoded]]] = {}
        for env in envelopes:
            key = (env.userid or "").encode()
            part = None if env.type in CANCELLING_TYPES else self.partition(topic, key)
            if part is None:
                await self._send_batches(open_batches, out)  # what came before it leaves before it
                try:
                    if isinstance(env, Encoded):
                        sent = await self._send_keyed(topic, key, env.value)
                    else:
                        sent = await self.enqueue(env)
                except Exception as exc:  # noqa: BLE001 - handed to the caller on the future
                    sent = _failed_future(exc)
                out.append(Sending(sent, [env]))
                continue
            value = env.value if isinstance(env, Encoded) else encode(env)
            entry = open_batches.get(part)
            if entry is None:
                entry = open_batches[part] = (self._producer.create_batch(), [])
            if entry[0].append(key=key, value=value, timestamp=None) is None:
                await self._send_batch(part, open_batches.pop(part), out)  # full: it leaves, the next one starts
                entry = open_batches[part] = (self._producer.create_batch(), [])
                if entry[0].append(key=key, value=value, timestamp=None) is None:  # never taken: say so
                    out.append(Sending(_failed_future(ValueError(f"a record of {len(value)} bytes")), [env]))
                    continue
            entry[1].append(env)
        await self._send_batches(open_batches, out)
        return out

    async def _send_batches(
        self, open_batches: dict[int, tuple[Any, list[Envelope | Encoded]]], out: list[Sending]
    ) -> None:
        while open_batches:
            part = next(iter(open_batches))
            await self._send_batch(part, open_batches.pop(part), out)

    async def _send_batch(self, part: int, entry: tuple[Any, list[Envelope | Encoded]], out: list[Sending]) -> None:
        batch, envs = entry
        try:
            sent: asyncio.Future[Any] = await self._producer.send_batch(batch, self.names.events, partition=part)
        except Exception as exc:  # noqa: BLE001 - handed to the caller on the future
            sent = _failed_future(exc)
        out.append(Sending(sent, envs))

    async def request_many(self, requests: Iterable[tuple[Envelope, Priority]]) -> list[Written]:
        """Publish many requests with the sends in flight together (bulk), then wait for all acks."""
        futures = [
            await self._send_keyed(self.names.request(priority), (env.userid or "").encode(), encode(env))
            for env, priority in requests
        ]
        metas = await asyncio.gather(*futures)
        return [Written(topic=m.topic, partition=m.partition, offset=m.offset) for m in metas]

    async def append_many(self, envelopes: Iterable[Envelope]) -> list[Written]:
        """Append many facts with the sends in flight together, then wait for all acks."""
        futures = []
        cancels = []
        for env in envelopes:
            cancel = await self._cancel_for(env)
            if cancel is not None:
                cancels.append(cancel)
            futures.append(await self._send_keyed(self.names.events, (env.userid or "").encode(), encode(env)))
        metas = await asyncio.gather(*futures)
        await asyncio.gather(*cancels)
        return [Written(topic=m.topic, partition=m.partition, offset=m.offset) for m in metas]

    async def forward(self, records: Iterable[RawRecord]) -> list[Written]:
        """Produce records byte for byte (key, value, headers), in flight together; wait for every ack."""
        futures = [
            await self._producer.send(
                r.topic,
                value=r.value,
                key=r.key,
                partition=r.partition if r.partition is not None or r.key is None else self.partition(r.topic, r.key),
                headers=r.headers or None,
            )
            for r in records
        ]
        metas = await asyncio.gather(*futures)
        return [Written(topic=m.topic, partition=m.partition, offset=m.offset) for m in metas]

    async def _cancel_for(self, env: Envelope) -> asyncio.Future[Any] | None:
        """Start sending the scheduler's cancel if ``env`` is a read or a delete."""
        reason = CANCELLING_TYPES.get(env.type)
        if reason is None:
            return None
        command = cancel_command(envelope_to_dict(env), reason)
        return await self._send_keyed(self.names.scheduled, (env.userid or "").encode(), json.dumps(command).encode())

    async def _send(self, topic: str, env: Envelope) -> Written:
        meta = await (await self._send_keyed(topic, (env.userid or "").encode(), encode(env)))
        return Written(topic=meta.topic, partition=meta.partition, offset=meta.offset)


async def _both(fact: asyncio.Future[Any], cancel: asyncio.Future[Any]) -> Any:
    """The fact's record metadata once both the fact and its cancel are on the broker."""
    meta, _ = await asyncio.gather(fact, cancel)
    return meta


def _failed_future(exc: BaseException) -> asyncio.Future[Any]:
    failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    failed.set_exception(exc)
    return failed
