"""Every place Herald reaches into Faust's or aiokafka's private attributes, and a check of them.

Neither library has a public way to set the consumer's fetch wait, to choose the
partitions of one poll, to read a partition's fetched high watermark and position, to
run something before the offset commit's producer flush, to pass over records no
agent needs without the per-record machinery, to hand a topic's records to its
agent straight from the consumer, to deliver a record without a task per record, or to
ask for some partitions in fewer fetches than the others, or to add a record to the
producer's open batch without a coroutine per record. Herald needs all nine
(``streams.consumer``, ``streams.priority_poll``, ``streams.consumer_lag``,
``streams.app``, ``streams.request_inbox``, ``streams.publish``), so the private names they use live here
and nowhere else in ``streams/``. An upgrade that renames one would otherwise fail quietly (a lag of 0, a
fetch wait ignored, a commit that no longer waits for live frames); instead
``check_internals()``, called when a worker's app is built, raises
``LibraryInternalsChanged`` naming the attribute, its owner and the installed library
version. pyproject.toml bounds both libraries to the minor versions checked here.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import re
import weakref
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Set
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import Any

import aiokafka
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.consumer.subscription_state import Assignment, Subscription, SubscriptionState, TopicPartitionState
from aiokafka.producer.message_accumulator import MessageAccumulator, MessageBatch
from aiokafka.structs import TopicPartition
from faust import streams as faust_streams
from faust.agents.agent import Agent
from faust.events import Event
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types.tuples import ack_lock
from faust.utils.functional import consecutive_numbers
from mode.services import WaitResults
from mode.utils.futures import notify

FAUST = "faust-streaming"
AIOKAFKA = "aiokafka"


class LibraryInternalsChanged(RuntimeError):
    """An installed Faust or aiokafka lacks a private attribute Herald relies on."""


@dataclass(frozen=True)
class Internal:
    """One private attribute Herald relies on.

    ``owner`` is the class that must have it: as a class attribute (method, property),
    or, with ``assigned``, as an instance attribute its code assigns (``self.name =``).
    ``calls``, when set, is code the attribute (a method) must contain.
    """

    library: str
    owner: type[Any] | ModuleType
    name: str
    used_by: str
    assigned: bool = False
    calls: str | None = None

    def missing(self) -> str | None:
        """Why the installed library does not meet this requirement, or ``None`` if it does."""
        if self.assigned:
            if not isinstance(self.owner, type) or not _assigned_in(self.owner, self.name):
                return f"{_qualified(self.owner)} no longer assigns self.{self.name}"
            return None
        if not hasattr(self.owner, self.name):
            return f"{_qualified(self.owner)} has no attribute {self.name!r}"
        if self.calls is not None and self.calls not in _source(getattr(self.owner, self.name)):
            return f"{_qualified(self.owner)}.{self.name} no longer calls {self.calls}"
        return None


REQUIRED: tuple[Internal, ...] = (
    # streams.consumer: the configurable fetch wait.
    Internal(FAUST, faust_aiokafka.Consumer, "_new_consumer_thread", "the consumer fetch wait"),
    Internal(FAUST, faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer", "the consumer fetch wait"),
    Internal(AIOKAFKA, aiokafka.AIOKafkaConsumer, "_fetch_max_wait_ms", "the consumer fetch wait", assigned=True),
    # streams.consumer: the event log asked for in a fetch at most every so often (``SparseFetch``).
    Internal(AIOKAFKA, aiokafka.AIOKafkaConsumer, "_fetcher", "the event log's fetch interval", assigned=True),
    Internal(AIOKAFKA, Fetcher, "_get_actions_per_node", "the event log's fetch interval", calls="assignment.tps"),
    Internal(
        AIOKAFKA,
        Fetcher,
        "_fetch_requests_routine",
        "the event log's fetch interval",
        calls="self._get_actions_per_node(assignment)",
    ),
    # streams.priority_poll: which partitions take part in a poll.
    Internal(FAUST, faust_aiokafka.Consumer, "_getmany", "the priority poll"),
    # The aiokafka client behind a Faust consumer (priority poll, lag probe, consumer lag).
    Internal(FAUST, faust_aiokafka.Consumer, "_thread", "the Kafka client of the worker", assigned=True),
    Internal(
        FAUST, faust_aiokafka.AIOKafkaConsumerThread, "_consumer", "the Kafka client of the worker", assigned=True
    ),
    # A partition's fetched high watermark and position (priority poll, consumer lag).
    Internal(AIOKAFKA, aiokafka.AIOKafkaConsumer, "_subscription", "partition lag", assigned=True),
    Internal(AIOKAFKA, SubscriptionState, "subscription", "partition lag"),
    Internal(AIOKAFKA, Subscription, "assignment", "partition lag"),
    Internal(AIOKAFKA, Assignment, "state_value", "partition lag"),
    Internal(AIOKAFKA, Assignment, "tps", "partition lag"),
    Internal(AIOKAFKA, TopicPartitionState, "highwater", "partition lag", assigned=True),
    Internal(AIOKAFKA, TopicPartitionState, "has_valid_position", "partition lag"),
    Internal(AIOKAFKA, TopicPartitionState, "position", "partition lag"),
    # streams.app: offset commits wait for the live frames (the producer flush before a commit).
    Internal(
        FAUST,
        faust_consumer.Consumer,
        "_commit_offsets",
        "commits waiting for live frames",
        calls="producer.flush()",
    ),
    # The commit guard (``committable_offset``): the state Faust's own ``_new_offset`` reads.
    Internal(FAUST, faust_consumer.Consumer, "_new_offset", "the offset commit guard"),
    Internal(FAUST, faust_consumer.Consumer, "_acked", "the offset commit guard", assigned=True),
    Internal(FAUST, faust_consumer.Consumer, "_acked_index", "the offset commit guard", assigned=True),
    Internal(FAUST, faust_consumer.Consumer, "_gap", "the offset commit guard", assigned=True),
    Internal(FAUST, faust_consumer.Consumer, "_committed_offset", "the offset commit guard", assigned=True),
    # Records no agent needs, acked without delivery (``consumer_skipping``).
    Internal(FAUST, faust_consumer.Consumer, "getmany", "skipping records no agent needs"),
    Internal(FAUST, faust_consumer.Consumer, "ack", "skipping records no agent needs"),
    Internal(FAUST, faust_consumer.Consumer, "_read_offset", "skipping records no agent needs", assigned=True),
    Internal(
        FAUST,
        faust_consumer.Consumer,
        "_drain_messages",
        "skipping records no agent needs",
        calls="set_read_offset(tp, offset)",
    ),
    # A poll's records no agent needs acked together, before Faust makes messages of them (``_skip_all``).
    Internal(
        FAUST,
        faust_consumer.Consumer,
        "ack",
        "skipping records no agent needs",
        calls="acked_for_tp.append(offset)",
    ),
    Internal(FAUST, faust_consumer.Consumer, "ack", "skipping records no agent needs", calls="with ack_lock:"),
    Internal(
        FAUST,
        faust_consumer.Consumer,
        "ack",
        "skipping records no agent needs",
        calls="notify(self._waiting_for_ack)",
    ),
    Internal(FAUST, faust_consumer.Consumer, "_n_acked", "skipping records no agent needs", assigned=True),
    Internal(FAUST, faust_consumer.Consumer, "_buffered_partitions", "skipping records no agent needs", assigned=True),
    Internal(
        FAUST,
        faust_consumer.Consumer,
        "getmany",
        "skipping records no agent needs",
        calls="records, active_partitions = await self._wait_next_records(timeout)",
    ),
    Internal(
        FAUST,
        faust_consumer.Consumer,
        "_wait_next_records",
        "skipping records no agent needs",
        calls="records = await self._getmany(",
    ),
    # Request records handed to their ingest agent from the consumer (``consumer_taking``).
    Internal(FAUST, faust_consumer.Consumer, "_add_gap", "taking request records at the consumer"),
    Internal(
        FAUST,
        faust_consumer.Consumer,
        "_drain_messages",
        "taking request records at the consumer",
        calls="self._add_gap(tp, r_offset + 1, offset)",
    ),
    Internal(FAUST, faust_streams, "_current_event", "taking request records at the consumer"),
    Internal(
        FAUST,
        faust_consumer.Consumer,
        "perform_seek",
        "taking request records at the consumer",
        calls="await self.seek_to_committed()",
    ),
    Internal(
        FAUST,
        faust_consumer.ThreadDelegateConsumer,
        "_seek",
        "taking request records at the consumer",
        calls="self._thread.seek(partition, offset)",
    ),
    # A record handed to its agents' streams without four tasks when nothing waits (``FirstStepWait``).
    Internal(
        FAUST,
        faust_consumer.Consumer,
        "_drain_messages",
        "delivering a record without a task per record",
        calls="await self.wait_first(",
    ),
    Internal(FAUST, faust_consumer.Consumer, "wait_first", "delivering a record without a task per record"),
    # streams.publish: a record added to its partition's open produce batch (``append_to_open_batch``).
    Internal(AIOKAFKA, aiokafka.AIOKafkaProducer, "_message_accumulator", "appending to an open batch", assigned=True),
    Internal(AIOKAFKA, aiokafka.AIOKafkaProducer, "_txn_manager", "appending to an open batch", assigned=True),
    Internal(AIOKAFKA, aiokafka.AIOKafkaProducer, "_max_request_size", "appending to an open batch", assigned=True),
    Internal(AIOKAFKA, aiokafka.AIOKafkaProducer, "_key_serializer", "appending to an open batch", assigned=True),
    Internal(AIOKAFKA, aiokafka.AIOKafkaProducer, "_value_serializer", "appending to an open batch", assigned=True),
    Internal(
        AIOKAFKA,
        aiokafka.AIOKafkaProducer,
        "send",
        "appending to an open batch",
        calls="fut = await self._message_accumulator.add_message(",
    ),
    Internal(AIOKAFKA, MessageAccumulator, "_batches", "appending to an open batch", assigned=True),
    Internal(AIOKAFKA, MessageAccumulator, "_closed", "appending to an open batch", assigned=True),
    Internal(AIOKAFKA, MessageAccumulator, "_exception", "appending to an open batch", assigned=True),
    Internal(AIOKAFKA, MessageAccumulator, "_loop", "appending to an open batch", assigned=True),
    Internal(
        AIOKAFKA,
        MessageAccumulator,
        "add_message",
        "appending to an open batch",
        calls="future = batch.append(key, value, timestamp_ms, headers=headers)",
    ),
    Internal(AIOKAFKA, MessageBatch, "append", "appending to an open batch", calls="future = _create_future()"),
    # herald.supervisor: an agent's error is reported at once.
    Internal(FAUST, Agent, "_on_error", "agent crash supervision", assigned=True),
)


def check_internals(required: Iterable[Internal] = REQUIRED) -> None:
    """Raise ``LibraryInternalsChanged`` listing every requirement the installed libraries miss."""
    problems = []
    for item in required:
        why = item.missing()
        if why is not None:
            problems.append(f"{item.library} {_version(item.library)}: {why} (used for {item.used_by})")
    if problems:
        raise LibraryInternalsChanged(
            "Herald relies on private parts of Faust/aiokafka that the installed versions lack: "
            + "; ".join(problems)
            + ". Install the versions pyproject.toml allows, or adapt streams/internals.py."
        )


def kafka_client(consumer: Any) -> aiokafka.AIOKafkaConsumer | None:
    """The aiokafka consumer behind a Faust consumer; ``None`` until the consumer has started."""
    thread = getattr(consumer, "_thread", None)
    return getattr(thread, "_consumer", None) if thread is not None else None


def current_assignment(client: aiokafka.AIOKafkaConsumer) -> Assignment | None:
    """The client's current assignment (a new object at every rebalance); ``None`` if it has none.

    Its ``tps`` are the assigned partitions. Cheaper than ``Consumer.assignment()``, which
    copies every partition into a new set of Faust ``TP``s on each call.
    """
    subscription = client._subscription.subscription
    return subscription.assignment if subscription is not None else None


def fetched_position(client: aiokafka.AIOKafkaConsumer, tp: Any) -> tuple[int, int] | None:
    """``(last fetched high watermark, position)`` of ``tp``; ``None`` if unassigned or not fetched yet."""
    subscription = client._subscription.subscription  # aiokafka keeps no public position accessor
    assignment = subscription.assignment if subscription is not None else None
    state = assignment.state_value(tp) if assignment is not None else None
    if state is None or state.highwater is None or not state.has_valid_position:
        return None
    return int(state.highwater), int(state.position)


class FirstStepWait:
    """A mode ``Service.wait_first`` that runs the first awaitable's first step before making any task.

    Faust's consumer hands every fetched record to its agents' streams with
    ``await self.wait_first(callback(message), self.suspend_flow.wait())``: four tasks (the
    callback, the flow's wait, the service's stopped and crashed waits) and an
    ``asyncio.wait`` per record, though the callback nearly always finishes at once (the
    record put in a stream's queue). Here, for that call (two awaitables, no timeout, the
    first a coroutine, the service running), the callback's first step runs first: if it
    finishes, that is the result, no task made; if it waits, the rest of it (``_Resumed``,
    which hands the loop what it waits on) races the flow's wait as before, in mode's own
    ``wait_first``. Any other call is mode's unchanged.
    """

    # mode's signature, hence ``timeout``.
    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:  # noqa: ASYNC109
        if (
            timeout is None
            and len(coros) == 2
            and inspect.iscoroutine(coros[0])
            and not (self._stopped.is_set() or self._crashed.is_set())  # type: ignore[attr-defined]
        ):
            first, other = coros
            try:
                waits_on = first.send(None)
            except StopIteration as finished:
                _close(other)
                return WaitResults([first], [finished.value], False)
            except BaseException:
                _close(other)
                raise
            coros = (_Resumed(first, waits_on), other)
        return await super().wait_first(*coros, timeout=timeout)  # type: ignore[misc]


def _close(waitable: Any) -> None:
    if inspect.iscoroutine(waitable):  # never started: closed, not left to warn "never awaited"
        waitable.close()


class _Resumed:
    """A coroutine stepped once already (it yielded ``waits_on``), awaited from there on."""

    __slots__ = ("_coro", "_waits_on")

    def __init__(self, coro: Any, waits_on: Any) -> None:
        self._coro = coro
        self._waits_on = waits_on

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, waits_on = self._coro, self._waits_on
        while True:  # ``yield from coro``, its first yield already made
            try:
                sent = yield waits_on
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001  # thrown in (a cancel): forwarded, as yield from does
                try:
                    waits_on = coro.throw(exc)
                except StopIteration as finished:
                    return finished.value
            else:
                try:
                    waits_on = coro.send(sent)
                except StopIteration as finished:
                    return finished.value


class SparseFetch:
    """The partitions of ``topics`` asked for in a fetch at most every ``interval`` seconds.

    aiokafka's fetcher asks for every assigned partition it holds no records of in each
    fetch request, one request per broker at a time. Wrapped around its
    ``_get_actions_per_node`` (the partitions and requests of its next step), this leaves
    the partitions of ``topics`` out of the requests it builds until ``interval`` has passed
    since a request last carried them; they are asked for in the first request built after
    that (their records, positions and the assignment are untouched: they are fetched later,
    not skipped). Left out, a partition's fetched but undrained records no longer hold up the
    fetch of the others either. The step's timeout is cut to the time left to the next turn.
    """

    def __init__(self, topics: Set[str], interval: float, *, clock: Callable[[], float] | None = None) -> None:
        import time

        self.topics = frozenset(topics)
        self.interval = interval
        self._clock = clock or time.monotonic
        self._due = 0.0

    def install(self, fetcher: Any) -> None:
        """Wrap ``fetcher``'s next-step planner (an instance attribute over the class's method)."""
        plan = fetcher._get_actions_per_node

        def planned(assignment: Any) -> Any:
            return self.plan(plan, assignment)

        fetcher._get_actions_per_node = planned

    def plan(self, plan: Callable[[Any], Any], assignment: Any) -> Any:
        """``plan(assignment)``, the partitions of ``topics`` left out until their turn."""
        now = self._clock()
        if now >= self._due:
            actions = plan(assignment)
            if any(self._carries(request) for _node, request in actions[0]):
                self._due = now + self.interval
            return actions
        requests, resets, timeout, invalid, resumes = plan(_Without(assignment, self.topics))
        return requests, resets, min(timeout, self._due - now), invalid, resumes

    def _carries(self, request: Any) -> bool:
        return any(topic in self.topics for topic, _partitions in request.topics)


class _Without:
    """An assignment seen without the partitions of some topics (what ``_get_actions_per_node`` reads)."""

    __slots__ = ("_assignment", "tps")

    def __init__(self, assignment: Any, topics: frozenset[str]) -> None:
        self._assignment = assignment
        self.tps = [tp for tp in assignment.tps if tp.topic not in topics]

    def state_value(self, tp: Any) -> Any:
        return self._assignment.state_value(tp)


def consumer_with_fetch_wait(
    fetch_max_wait_ms: int, *, sparse: Callable[[], SparseFetch | None] | None = None
) -> type[faust_aiokafka.Consumer]:
    """Faust's aiokafka consumer class, its client built with ``fetch_max_wait_ms`` (Faust hard-codes 1500);
    with ``sparse``, each client's fetcher is planned by the ``SparseFetch`` it returns (if any)."""

    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            # Read by AIOKafkaConsumer.start() when it builds its Fetcher.
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            spacing = sparse() if sparse is not None else None
            if spacing is not None:
                start = consumer.start

                async def start_spaced() -> None:
                    await start()
                    spacing.install(consumer._fetcher)

                consumer.start = start_spaced
            return consumer

    class Consumer(FirstStepWait, faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

        def _new_offset(self, tp: Any) -> int | None:
            return committable_offset(self, tp)

    return Consumer


def committable_offset(consumer: Any, tp: Any) -> int | None:
    """The offset to commit for ``tp``: one past the acked run that starts at the committed offset.

    Faust's ``Consumer._new_offset`` with one line fixed. Faust keeps the committed offset
    as Kafka does (the next record to read) and acks records at or after it, but its guard
    refuses to commit only when the first acked offset is *more than one* past it: with
    committed ``N`` and ``N+1, N+2`` acked while ``N`` is not (``N`` dropped from a stream's
    buffer at a rebalance and not yet read again), it committed ``N+3`` and record ``N``
    was never processed: a request never decided (the fault suite found it around worker
    rebalances). Here nothing is committed until ``N`` itself is acked or known to be a
    gap in the log (Faust's gap ranges are merged in first, as before).
    """
    acked: list[int] = consumer._acked[tp]
    if not acked:
        return None
    gaps = consumer._gap[tp]
    if gaps:
        max_offset = max(acked)
        candidates = sorted(gaps.overlap(0, max_offset), key=lambda interval: interval.begin)
        if candidates:
            filled: list[int] = []
            for interval in candidates:
                filled.extend(range(interval.begin, interval.end))
            acked.extend(filled)
            gaps.chop(0, max(filled[-1], max_offset + 1))
    acked.sort()
    committed = consumer._committed_offset[tp]
    if committed is not None and acked[0] > committed:  # Faust: acked[0] - committed > 1
        return None
    batch = next(consecutive_numbers(acked))
    acked[: len(batch)] = []
    consumer._acked_index[tp].difference_update(batch)
    return int(batch[-1]) + 1


PollChoice = Callable[[aiokafka.AIOKafkaConsumer, Set[Any]], Set[Any]]
"""Given the client and a poll's active partitions, the partitions to poll."""


PollWait = Callable[[aiokafka.AIOKafkaConsumer], Awaitable[None]]
"""Given the client, waits as long as the next poll can wait."""


def consumer_with_poll_choice(base: type[Any], choose: PollChoice, wait: PollWait | None = None) -> type[Any]:
    """``base`` (a Faust consumer class) polling only the partitions ``choose`` picks each time.

    When ``choose`` picks none, the poll is sat out (an empty set would mean "every
    partition" to the client). ``wait``, when given, is awaited before every poll.
    """

    class ChoosingConsumer(base):  # type: ignore[misc]
        # Faust's signature, hence ``timeout``.
        async def _getmany(self, active_partitions: Set[Any] | None, timeout: float) -> Any:  # noqa: ASYNC109
            if active_partitions:
                client = kafka_client(self)
                if client is not None:
                    if wait is not None:
                        await wait(client)
                    active_partitions = choose(client, active_partitions)
                if not active_partitions:
                    await asyncio.sleep(min(timeout, 0.01))
                    return {}
            return await super()._getmany(active_partitions, timeout)

    return ChoosingConsumer


RecordFilter = Callable[[Any], bool]
"""Given a fetched record (a Faust ``Message``), whether any agent of its topic needs it."""


def consumer_skipping(base: type[Any], wanted: Mapping[str, RecordFilter]) -> type[Any]:
    """``base`` (a Faust consumer class) acking, without delivering, records their topic's filter rejects.

    ``wanted`` maps a topic name to its filter. A rejected record never reaches Faust's
    per-record machinery (``Consumer._drain_messages``: two tasks, the conductor, the
    agent's stream): it counts as read (``_read_offset``, so no gap is recorded over it)
    and as acked (``Consumer.ack``), as if an agent had taken it and done nothing. The
    commit guard (``committable_offset``) still commits nothing past a record an agent
    has not finished. Until a partition has a committed offset it has no such guard
    (Faust commits the first acked run, whatever precedes it), so there every record is
    delivered as usual.

    A partition whose records in a poll are all rejected (the common case: most of the log
    is about notifications) is passed over before Faust even makes messages of them
    (``_getmany``): its records are read and acked together (``_skip_all``: what ``ack``
    does for each), under the same conditions Faust's ``getmany`` hands records out (the
    flow active, the partition active). A partition with a record to deliver is left
    whole to ``getmany``, record by record as before, so a record is never marked read
    before an earlier one of its partition was delivered.
    """

    class SkippingConsumer(base):  # type: ignore[misc]
        skipped = 0
        """Records acked without delivery so far."""

        # Faust's signature, hence ``timeout``.
        async def _getmany(self, active_partitions: Set[Any] | None, timeout: float) -> Any:  # noqa: ASYNC109
            records = await super()._getmany(active_partitions, timeout)
            if not records or not self.flow_active:
                return records
            committed = self._committed_offset
            buffered = self._buffered_partitions
            passed = []
            for tp, batch in records.items():
                keep = wanted.get(tp.topic)
                if keep is None or committed[tp] is None or not batch:
                    continue
                if active_partitions is not None and tp not in active_partitions and tp not in buffered:
                    continue  # getmany drops it
                for record in batch:
                    if keep(record):
                        break
                else:
                    passed.append(tp)
            for tp in passed:
                self._skip_all(tp, records.pop(tp))
            return records

        def _skip_all(self, tp: Any, batch: list[Any]) -> None:
            """Read and ack every record of ``batch`` (records of ``tp`` in offset order): ``ack`` for each."""
            read = self._read_offset
            last = read[tp]
            offsets = [record.offset for record in batch if last is None or record.offset >= last]
            if not offsets:
                return
            read[tp] = offsets[-1]
            self.skipped += len(offsets)
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))  # as getmany, once per partition
            if not self.app.topics.acks_enabled_for(tp.topic):
                return
            with ack_lock:  # Consumer.ack's bookkeeping, for the whole run at once
                committed = self._committed_offset[tp]
                acked_index = self._acked_index[tp]
                fresh = [
                    offset
                    for offset in offsets
                    if (committed is None or offset >= committed) and offset not in acked_index
                ]
                if fresh:
                    acked_index.update(fresh)
                    self._acked[tp].extend(fresh)
                    self._n_acked += len(fresh)
                notify(self._waiting_for_ack)

        # Faust's signature, hence ``timeout``.
        async def getmany(self, timeout: float) -> Any:  # noqa: ASYNC109
            read = self._read_offset
            committed = self._committed_offset
            async for tp, message in super().getmany(timeout):
                keep = wanted.get(tp.topic)
                if keep is None or committed[tp] is None or keep(message):
                    yield tp, message
                    continue
                last = read[tp]
                if last is None or message.offset >= last:  # as _drain_messages: no re-read of an old one
                    read[tp] = message.offset
                    self.ack(message)
                    self.skipped += 1

    return SkippingConsumer


RecordTaker = Callable[[Any], None]
"""Takes a fetched record (a Faust ``Message``) for its agent; must not block."""


class TakeEpoch:
    """Counts the seeks and rebalances of the worker's consumer (``consumer_taking``).

    A record taken before the latest one is dead: the consumer has since been moved back
    (to the committed offset, at the end of every rebalance) and reads it again, so its
    agent's inbox drops it (``streams.request_inbox``) rather than process it twice or,
    worse, lose it when Faust clears its buffers on resuming the flow.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def bump(self) -> None:
        self.value += 1


def consumer_taking(base: type[Any], take: Mapping[str, RecordTaker], epoch: TakeEpoch) -> type[Any]:
    """``base`` (a Faust consumer class) handing each record of the topics in ``take`` to its taker.

    ``take`` maps a topic name to a callable that keeps the record for the one agent that
    processes it (``streams.request_inbox``). Such a record never reaches Faust's per-record
    machinery (``Consumer._drain_messages``: two tasks, the conductor, the agent's stream).
    Records of a partition are taken in offset order, each once per position of the
    consumer: the next offset to take is kept per partition, set where the consumer is moved
    (``perform_seek`` to the committed offsets at the end of every rebalance; a ``seek`` of
    a request partition is refused) and forgotten for revoked and newly assigned partitions.
    A record before it was taken already and is passed over. A record after it is a hole in
    the log (recorded as Faust records one, ``_add_gap``, so commits can pass offsets that
    do not exist) only in a poll issued after the consumer's last move: a poll issued before
    it (its records handed out after the move completed) brings records of the position the
    consumer left, and of those only the next offset to take is taken; the rest come again
    from the new position. Faust's own reading recorded such a stale record as a hole after
    the rebalance's seek, and the commit guard then committed past requests never
    processed. Every move bumps ``epoch``: a record taken before it is dead (read again). A
    partition without a committed offset is moved to the start of its log (the consumer's
    ``auto_offset_reset`` is ``earliest``), where the client's own seek leaves it where it
    was. Acking a record, once it is processed, is the taker's agent's job: the commit
    guard (``committable_offset``) commits nothing past a record not acked.
    """

    class TakingConsumer(base):  # type: ignore[misc]
        taken = 0
        """Records handed to a taker so far."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._next_take: dict[Any, int] = {}

        def _moved(self, offsets: Mapping[Any, int | None]) -> None:
            next_take = self._next_take
            for tp, offset in offsets.items():
                if offset is None:
                    next_take.pop(tp, None)
                else:
                    next_take[tp] = offset
            epoch.bump()

        async def perform_seek(self) -> None:
            await super().perform_seek()
            read = self._read_offset
            moved = {tp: read.get(tp) for tp in self.assignment() if tp.topic in take}
            # Seek again, with no await in between: a poll handed out while the client sought
            # (its records taken, now dead) may have moved the client past the committed
            # offset. The client seeks only to a committed offset above 0: none (or 0) means
            # the start of the log. Faust's ``_seek`` is the client's synchronous seek.
            for tp, offset in moved.items():
                await self._seek(tp, offset or 0)
            self._moved(moved)

        # Faust moves request partitions only with ``perform_seek`` (its ``seek_wait`` moves the
        # tables' changelogs): moving one alone would leave the records taken of the others
        # live but their next offsets unread, so it is refused rather than half followed.
        async def seek(self, partition: Any, offset: int) -> None:
            _refuse_moving({partition}, take)
            await super().seek(partition, offset)

        async def seek_wait(self, partitions: Mapping[Any, int]) -> None:
            _refuse_moving(partitions, take)
            await super().seek_wait(partitions)

        async def on_partitions_revoked(self, revoked: Set[Any]) -> None:
            self._moved(dict.fromkeys(revoked))  # before Faust clears its buffers (and the inboxes)
            await super().on_partitions_revoked(revoked)

        async def on_partitions_assigned(self, assigned: Set[Any], generation_id: int = 0) -> None:
            # The client starts every assigned partition at its committed offset again.
            self._moved(dict.fromkeys(self._next_take))
            await super().on_partitions_assigned(assigned, generation_id)

        # Faust's signature, hence ``timeout``.
        async def getmany(self, timeout: float) -> Any:  # noqa: ASYNC109
            read = self._read_offset
            next_take = self._next_take
            polled_in = epoch.value  # before the poll is issued
            async for tp, message in super().getmany(timeout):
                taker = take.get(tp.topic)
                if taker is None:
                    yield tp, message
                    continue
                offset = message.offset
                expected = next_take.get(tp)
                if expected is not None and offset != expected:
                    if offset < expected or polled_in != epoch.value:
                        continue  # taken already, or read from a position the consumer has left
                    await self._add_gap(tp, expected, offset - 1)  # a hole in the log
                    if polled_in != epoch.value:
                        continue
                next_take[tp] = offset + 1
                read[tp] = offset
                taker(message)
                self.taken += 1

    return TakingConsumer


def _refuse_moving(partitions: Iterable[Any], take: Mapping[str, RecordTaker]) -> None:
    moved = sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions if tp.topic in take)
    if moved:
        raise RuntimeError(f"request partitions {moved} are moved only by a rebalance (consumer_taking)")


def set_current_event(app: Any, message: Any) -> tuple[contextvars.Token[Any], Event]:
    """Make ``message`` the current event of this task, as Faust's stream does for each record it yields.

    Table writes find their changelog partition from it (``Collection.partition_for_key``).
    Keep the returned event referenced while it is current (Faust holds it by weak
    reference) and pass the token to ``reset_current_event`` afterwards.
    """
    event = Event(app, message.key, message.value, message.headers, message)
    return faust_streams._current_event.set(weakref.ref(event)), event


def reset_current_event(token: contextvars.Token[Any]) -> None:
    """Undo ``set_current_event``."""
    faust_streams._current_event.reset(token)


_PARTITIONS: dict[tuple[str, int], TopicPartition] = {}
"""The ``TopicPartition`` of each (topic, partition) the worker sends to (a few dozen)."""


def append_to_open_batch(
    producer: aiokafka.AIOKafkaProducer, topic: str, partition: int, key: bytes | None, value: bytes | None
) -> asyncio.Future[Any] | None:
    """Add a record to the open batch of ``topic[partition]`` in ``producer``; ``None`` when there is none.

    What ``AIOKafkaProducer.send(topic, value, key=key, partition=partition)`` does when the
    partition has a batch lingering with room for the record (the topic's metadata is known
    then, and the record is not too large): ``MessageAccumulator.add_message`` appends it to
    that batch, its timestamp the batch's (none given) and no headers, and returns the
    record's future. Here without the two coroutines, the serialiser and size checks and
    the debug log line around it (a few us a record on the worker's path).

    ``None`` (nothing done: the caller sends as usual, which creates a batch, waits for
    room, raises...) when the partition has no batch or its last batch is full or closed,
    when the accumulator is closed or failed, for a transactional or idempotent producer
    (its sequence numbers are for aiokafka to keep), for a producer with serialisers, and
    for a record of half the maximum request size or more.
    """
    if producer._txn_manager is not None:
        return None
    if producer._key_serializer is not None or producer._value_serializer is not None:
        return None
    accumulator = producer._message_accumulator
    if accumulator._closed or accumulator._exception is not None:
        return None
    size = (len(key) if key is not None else 0) + (len(value) if value is not None else 0)
    if size * 2 >= producer._max_request_size:
        return None
    tp = _PARTITIONS.get((topic, partition))
    if tp is None:
        if len(_PARTITIONS) >= 4096:  # bounded: topics and partitions are few
            _PARTITIONS.clear()
        tp = _PARTITIONS[(topic, partition)] = TopicPartition(topic, partition)
    batches = accumulator._batches.get(tp)
    if not batches:
        return None
    # Full or closed: ``None``, nothing appended (add_message would wait for the batch to drain).
    sent: asyncio.Future[Any] | None = batches[-1].append(
        key, value, None, _create_future=accumulator._loop.create_future
    )
    return sent


def flush_first(producer: Any, before: Callable[[], Awaitable[None]]) -> None:
    """Make ``producer.flush()`` (which Faust awaits before every offset commit) await ``before()`` first."""
    flush_producer = producer.flush

    async def flush() -> None:
        await before()
        await flush_producer()

    producer.flush = flush


def _qualified(owner: type[Any] | ModuleType) -> str:
    if isinstance(owner, ModuleType):
        return owner.__name__
    return f"{owner.__module__}.{owner.__qualname__}"


def _version(library: str) -> str:
    try:
        return version(library)
    except PackageNotFoundError:
        return "(not installed)"


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


_ASSIGNED: dict[tuple[type[Any], str], bool] = {}


def _assigned_in(owner: type[Any], name: str) -> bool:
    """Whether ``owner`` has ``name`` on the class or a method of it or its bases assigns ``self.name``."""
    known = _ASSIGNED.get((owner, name))
    if known is None:
        known = _ASSIGNED[(owner, name)] = _find_assignment(owner, name)
    return known


def _find_assignment(owner: type[Any], name: str) -> bool:
    if any(name in vars(cls) for cls in owner.__mro__):
        return True
    pattern = re.compile(rf"\bself\.{re.escape(name)}\s*(?::[^=\n]+)?=(?!=)")
    for cls in owner.__mro__:
        for member in vars(cls).values():
            function = member.fget if isinstance(member, property) else member
            if inspect.isfunction(function) and pattern.search(_source(function)):
                return True
    return False
