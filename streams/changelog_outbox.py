"""A Faust table's changelog records, written to its local store now and handed to the producer in order.

A table write through Faust (``table[key] = value``) goes through its send buffer: a loop
pass and a future message per record, a flush task per buffered record past 100, and no
order between a key's deletion and its re-write sent from different places. The stores
that write on the worker's hot path (``streams.admission_store``, ``streams.sent_targets``)
instead change the local store at once and keep each record here (the bytes the table's
own ``__setitem__``/``__delitem__`` would produce: its changelog topic's serialisers, the
event's partition) until ``send`` hands it to the app's producer directly (with ``direct``,
to aiokafka's producer itself, as ``streams.publish.send``). Records go in
the order written, whichever agent or actor wrote them, so a key deleted then written
again ends written on the changelog and in a table restored from it. Offset commits still
wait for every record: Faust flushes this producer before every commit. The in-memory
store keeps no changelog offsets, all Faust's sent callback would record.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from streams.publish import producer_of, report_failure


class ChangelogRecord:
    """One changelog record, written locally and kept until ``ChangelogOutbox.send`` hands it over."""

    __slots__ = ("key", "partition", "report", "sent", "value")

    def __init__(self, key: bytes | None, value: bytes | None, partition: int, report: bool) -> None:
        self.key = key
        self.value = value
        self.partition = partition
        self.report = report
        """Whether a refusal is logged by the outbox (else the writer awaits ``sent`` itself)."""
        self.sent: asyncio.Future[Any] | None = None
        """The producer's future of the broker's acknowledgement, once handed over."""


class ChangelogOutbox:
    """The unsent changelog records of one Faust ``table`` (its ``changelog_topic``)."""

    def __init__(self, table: Any, *, direct: bool = False) -> None:
        """``direct``: records go to aiokafka's producer itself (as ``streams.publish.send``), without
        Faust's ``Producer.send`` wrapper (its transaction lookup, header conversion and
        ``on_produce_message`` signal, which no one here receives): for a table written per request."""
        self._table = table
        self._direct = direct
        self._topic: Any = table.changelog_topic
        self._unsent: deque[ChangelogRecord] = deque()
        self._sending = asyncio.Lock()

    def write(self, key: str, value: Any | None, partition: int, *, report: bool = True) -> ChangelogRecord:
        """Set (``value``) or delete (``None``) ``key`` in the table's local store; its record kept for ``send``.

        ``report=False``: the caller awaits the record's ``sent`` future and handles a refusal
        itself (a tombstone's refusal is always logged here: no one awaits it).
        """
        table = self._table
        topic = self._topic
        raw_key, _ = topic.prepare_key(key, table.key_serializer)
        if value is None:
            table.data.pop(key, None)
            record = ChangelogRecord(raw_key, None, partition, True)
        else:
            raw_value, _ = topic.prepare_value(value, table.value_serializer)
            table.data[key] = value
            record = ChangelogRecord(raw_key, raw_value, partition, report)
        self._unsent.append(record)
        return record

    async def send(self) -> None:
        """Hand the records written so far to the app's producer, in the order written (no ack awaited).

        One caller at a time hands records over (a lock), so records keep their order
        whichever caller wrote them, and a caller returns only once its own records are with
        the producer (each record's ``sent`` is then set).
        """
        unsent = self._unsent
        if not unsent:
            return
        async with self._sending:
            producer, client = await producer_of(self._topic.app)
            if not self._direct:
                client = None
            name = self._topic.get_topic_name()
            while unsent:
                record = unsent[0]
                sent: asyncio.Future[Any]
                if client is not None:  # aiokafka's producer itself, as streams.publish.send
                    sent = await client.send(name, record.value, key=record.key, partition=record.partition)
                else:  # Faust's producer (not direct, or another transport)
                    sent = await producer.send(name, record.key, record.value, record.partition, None, None)
                unsent.popleft()
                record.sent = sent
                if record.report:
                    sent.add_done_callback(report_failure)

    def __len__(self) -> int:
        """Records written and not handed over yet."""
        return len(self._unsent)
