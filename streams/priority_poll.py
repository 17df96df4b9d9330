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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Set
from typing import Any

import faust

from engine.priority import Priority
from engine.topics import TopicNames
from streams.priority_gate import PriorityGate

log = logging.getLogger(__name__)

_ORDER = (Priority.HIGH, Priority.MEDIUM, Priority.LOW)


def lagging(client: Any, tp: Any) -> bool:
    """Whether ``tp`` has records the Kafka client has not handed out yet (as far as it knows)."""
    try:
        state = client._subscription.subscription.assignment.state_value(tp)
    except AttributeError:  # not assigned (yet): nothing to wait for
        return False
    if state is None or state.highwater is None or not state.has_valid_position:
        return False
    return bool(state.highwater > state.position)


def prioritized(
    active: Set[Any],
    topics: dict[str, Priority],
    *,
    backlog: Callable[[Priority], int],
    max_backlog: int,
    is_lagging: Callable[[Any], bool],
) -> set[Any]:
    """``active`` without the request partitions that must sit this poll out."""
    skip = {p for p in _ORDER if backlog(p) >= max_backlog}
    for rank, priority in enumerate(_ORDER[:-1]):
        if any(is_lagging(tp) for tp in active if topics.get(tp.topic) == priority):
            skip.update(_ORDER[rank + 1 :])
            break
    if not skip:
        return set(active)
    return {tp for tp in active if topics.get(tp.topic) not in skip}


def install_priority_polls(app: faust.App, gate: PriorityGate, names: TopicNames, *, max_backlog: int) -> None:
    """Make ``app``'s consumer poll request partitions by priority and agent backlog."""
    topics = {names.request(p): p for p in Priority}
    base: Any = app.transport.Consumer

    class PriorityConsumer(base):  # type: ignore[misc, valid-type]
        # Faust's signature, hence ``timeout``.
        async def _getmany(self, active_partitions: Set[Any] | None, timeout: float) -> Any:  # noqa: ASYNC109
            if active_partitions:
                try:
                    client = self._thread._ensure_consumer()
                    active_partitions = prioritized(
                        active_partitions,
                        topics,
                        backlog=gate.pending,
                        max_backlog=max_backlog,
                        is_lagging=lambda tp: lagging(client, tp),
                    )
                except Exception:
                    # An error here would silently stop the worker's consumer: poll everything instead.
                    log.exception("priority poll failed; polling every partition")
                if not active_partitions:
                    # No partitions would mean "all of them" to the client: sit this poll out.
                    await asyncio.sleep(min(timeout, 0.01))
                    return {}
            return await super()._getmany(active_partitions, timeout)

    app.transport.Consumer = PriorityConsumer  # type: ignore[misc]
