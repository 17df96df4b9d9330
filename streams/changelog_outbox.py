"""A Faust table's changelog records, written to its local store now and handed to the producer in order.

A table write through Faust (``table[key] = value``) goes through its send buffer: a loop
pass and a future message per record, a flush task per buffered record past 100, and no
order between a key's deletion and its re-write sent from different places. The stores
that write on the worker's hot path (``streams.admission_store``, ``streams.sent_targets``)
instead change the local store at once and keep each record here (the bytes the table's
own ``__setitem__``/``__delitem__`` would produce: its changelog topic's serialisers, the
event's partition) until ``send`` hands it to the app's producer directly (to aiokafka's
producer itself, as ``streams.publish.send``). Records go in
the order written, whichever agent or actor wrote them, so a key deleted then written
again ends written on the changelog and in a table restored from it. Offset commits still
wait for every record: Faust flushes this producer before every commit. The in-memory
store keeps no changelog offsets, all Faust's sent callback would record.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import orjson
from faust.utils import json as faust_json

from streams.internals import append_to_open_batch
from streams.publish import producer_of, report_failure

_FAUST_JSON = orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z
"""The options of Faust's ``json`` codec (``faust.utils.json.dumps``, with orjson installed)."""


def _serialised_by_orjson(table: Any) -> bool:
    """Whether ``table``'s changelog keys and values are what ``orjson.dumps(x, option=_FAUST_JSON)`` writes.

    So when both serialisers are Faust's ``json`` codec on orjson (``faust.utils.json``) and
    neither keys nor values have a model type: ``Topic.prepare_key``/``prepare_value`` then
    come down to that call, after about 3 us of codec lookups per key on the worker's hot path.
    """
    if getattr(faust_json, "orjson", None) is not orjson:
        return False
    if table.key_serializer != "json" or table.value_serializer != "json":
        return False
    schema = getattr(table.changelog_topic, "schema", None)
    return table.key_type is None and table.value_type is None and getattr(schema, "key_type", None) is None


def _orjson_value(value: Any) -> bytes | None:
    """A list or dict value as Faust's ``json`` codec writes it; ``None`` for anything else.

    orjson writes a native value (str, int, float, bool, None, lists and dicts of them) the
    same with or without Faust's ``default`` hook, which it calls only for other types: those
    raise here (no hook) and are left to Faust's codec, as are models and every other type.
    """
    if type(value) is not list and type(value) is not dict:
        return None
    try:
        return orjson.dumps(value, option=_FAUST_JSON)
    except TypeError:
        return None


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

    def __init__(self, table: Any) -> None:
        """Records go to aiokafka's producer itself (as ``streams.publish.send``), without Faust's
        ``Producer.send`` wrapper (its transaction lookup, header conversion and
        ``on_produce_message`` signal, which no one here receives)."""
        self._table = table
        self._topic: Any = table.changelog_topic
        self._unsent: deque[ChangelogRecord] = deque()
        self._sending = asyncio.Lock()
        self._name: str | None = None
        """The changelog topic's name, once asked (a table's changelog topic is one named topic)."""
        self._orjson = _serialised_by_orjson(table)
        """Whether keys and values are JSON written by ``orjson.dumps`` with Faust's options (``_FAUST_JSON``)."""

    def write(self, key: str, value: Any | None, partition: int, *, report: bool = True) -> ChangelogRecord:
        """Set (``value``) or delete (``None``) ``key`` in the table's local store; its record kept for ``send``.

        ``report=False``: the caller awaits the record's ``sent`` future and handles a refusal
        itself (a tombstone's refusal is always logged here: no one awaits it).
        """
        table = self._table
        topic = self._topic
        if self._orjson and type(key) is str:
            raw_key = orjson.dumps(key, option=_FAUST_JSON)
        else:
            raw_key, _ = topic.prepare_key(key, table.key_serializer)
        if value is None:
            table.data.pop(key, None)
            record = ChangelogRecord(raw_key, None, partition, True)
        else:
            raw_value = _orjson_value(value) if self._orjson else None
            if raw_value is None:
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
            name = self._name
            if name is None:
                name = self._name = self._topic.get_topic_name()
            while unsent:
                record = unsent[0]
                sent: asyncio.Future[Any]
                if client is not None:  # aiokafka's producer itself, as streams.publish.send
                    opened = append_to_open_batch(client, name, record.partition, record.key, record.value)
                    if opened is None:
                        opened = await client.send(name, record.value, key=record.key, partition=record.partition)
                    sent = opened
                else:  # another transport: Faust's producer
                    sent = await producer.send(name, record.key, record.value, record.partition, None, None)
                unsent.popleft()
                record.sent = sent
                if record.report:
                    sent.add_done_callback(report_failure)

    def __len__(self) -> int:
        """Records written and not handed over yet."""
        return len(self._unsent)
