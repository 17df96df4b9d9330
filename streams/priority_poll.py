"""Priority isolation at the consumer: which request partitions take part in a poll.

The Kafka client buffers what it fetched per partition and hands it out partition by
partition, in fetch order; Faust then hands each poll to the agents' buffers before
polling again. Left alone, a backlog on ``requests.low`` fills the buffers, and a fresh
high-priority record waits behind thousands of low ones. So before every poll the
worker's consumer leaves out:

- the request partitions of a priority whose ingest agent already holds
  ``max_backlog`` records (its own flow control: buffers stay short, so the consumer
  never blocks on a full one and every poll is quick);
- every ``requests.medium`` and ``requests.low`` partition while a ``requests.high``
  partition has lag in the client (records fetched or on the broker, not handed out),
  and ``requests.low`` while ``requests.medium`` has lag.

Left-out records stay buffered in the client and come with a later poll.
``streams.priority_gate`` does the same for records already handed to the agents.

Polls are paced while the agents have a backlog (``PollPace``): the consumer hands request
records to the agents without per-record work (``streams.request_inbox``), so left alone it
polls again at once, each poll a round trip to Faust's consumer thread bringing a few of
the worker's own log records (hundreds of polls a second in a bulk, where Faust's
per-record delivery used to space them out). Records of a priority with nothing queued are
never held back by it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Set
from typing import Any

import faust

from engine.priority import Priority
from engine.topics import TopicNames
from streams.internals import consumer_with_poll_choice, current_assignment, fetched_position
from streams.priority_gate import PriorityGate

log = logging.getLogger(__name__)

_ORDER = (Priority.HIGH, Priority.MEDIUM, Priority.LOW)


class LagProbe:
    """Whether a partition has records the Kafka client has not handed out yet.

    Lag is the client's last fetched highwater past its position. A lag that stays
    exactly the same for ``stale_after`` seconds is ignored: real lag on a polled
    partition is handed out within a poll, so an unchanging one is a broker reporting
    a highwater no record will ever reach (Tansu does), and must not hold lower
    priorities back for good.
    """

    def __init__(self, *, stale_after: float = 1.0) -> None:
        self.stale_after = stale_after
        self._seen: dict[Any, tuple[int, int, float]] = {}

    def __call__(self, client: Any, tp: Any) -> bool:
        fetched = fetched_position(client, tp)
        if fetched is None:  # not assigned (yet) or not fetched from: nothing to wait for
            return False
        highwater, position = fetched
        if highwater <= position:
            self._seen.pop(tp, None)
            return False
        now = time.monotonic()
        first = self._seen.get(tp)
        if first is None or first[:2] != (highwater, position):
            self._seen[tp] = (highwater, position, now)
            return True
        return now - first[2] < self.stale_after


class PollPace:
    """Waits before a poll while the ingest agents have a backlog, unless a priority with none has lag.

    With at least ``backlog`` records queued or in flight (``PriorityGate.pending``), about a
    ``backlog``'s worth of work, the next poll waits up to ``pause`` seconds: the queued
    priorities' new records would wait behind their backlog anyway, and the other topics'
    records (the worker's log, the sinks' work) wait at most ``pause``. Lag (records fetched
    or on the broker, not handed out) of a priority with nothing queued ends the wait at
    once, checked every ``step`` seconds: a fresh high-priority request is polled as before.
    """

    def __init__(
        self,
        gate: PriorityGate,
        lagging: Callable[[Any, Priority], bool],
        *,
        backlog: int = 50,
        pause: float = 0.02,
        step: float = 0.002,
    ) -> None:
        self.gate = gate
        self.lagging = lagging
        self.backlog = backlog
        self.pause = pause
        self.step = step
        self.paused = 0
        """Polls that waited so far."""

    async def __call__(self, client: Any) -> None:
        pending = {p: self.gate.pending(p) for p in _ORDER}
        if sum(pending.values()) < self.backlog:
            return
        idle = [p for p in _ORDER if not pending[p]]
        self.paused += 1
        deadline = time.monotonic() + self.pause
        while not any(self.lagging(client, p) for p in idle):
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(self.step)


def prioritized(
    active: Set[Any],
    topics: dict[str, Priority],
    *,
    backlog: Callable[[Priority], int],
    max_backlog: int,
    is_lagging: Callable[[Any], bool],
    by_priority: bool = True,
) -> set[Any]:
    """``active`` without the request partitions that must sit this poll out."""
    skip = {p for p in _ORDER if backlog(p) >= max_backlog}
    for rank, priority in enumerate(_ORDER[:-1] if by_priority else ()):
        if any(is_lagging(tp) for tp in active if topics.get(tp.topic) == priority):
            skip.update(_ORDER[rank + 1 :])
            break
    if not skip:
        return set(active)
    return {tp for tp in active if topics.get(tp.topic) not in skip}


def install_priority_polls(
    app: faust.App,
    gate: PriorityGate,
    names: TopicNames,
    *,
    max_backlog: int,
    by_priority: bool = True,
    lag: LagProbe | None = None,
) -> None:
    """Make ``app``'s consumer poll request partitions by agent backlog and (``by_priority``) priority."""
    topics = {names.request(p): p for p in Priority}
    probe = lag or LagProbe()

    def choose(client: Any, active: Set[Any]) -> Set[Any]:
        try:
            return prioritized(
                active,
                topics,
                backlog=gate.pending,
                max_backlog=max_backlog,
                is_lagging=lambda tp: probe(client, tp),
                by_priority=by_priority,
            )
        except Exception:
            # An error here would silently stop the worker's consumer: poll everything instead.
            log.exception("priority poll failed; polling every partition")
            return active

    def lagging(client: Any, priority: Priority) -> bool:
        name = names.request(priority)
        assignment = current_assignment(client)
        return assignment is not None and any(probe(client, tp) for tp in assignment.tps if tp.topic == name)

    pace = PollPace(gate, lagging)
    # The poll hook is private to Faust: streams.internals.
    app.transport.Consumer = consumer_with_poll_choice(app.transport.Consumer, choose, pace)  # type: ignore[misc]
