"""Priority isolation policy: which request partitions are polled, when lower agents wait."""

from __future__ import annotations

import asyncio
import time
from typing import NamedTuple

from engine.priority import Priority
from streams.priority_gate import PriorityGate
from streams.priority_poll import LagProbe, prioritized


class TP(NamedTuple):
    topic: str
    partition: int


TOPICS = {"r.high": Priority.HIGH, "r.medium": Priority.MEDIUM, "r.low": Priority.LOW}
ALL = {TP(t, p) for t in (*TOPICS, "events") for p in range(2)}


def _poll(lagging: set[str], backlog: dict[Priority, int] | None = None, *, by_priority: bool = True) -> set[str]:
    kept = prioritized(
        ALL,
        TOPICS,
        backlog=lambda p: (backlog or {}).get(p, 0),
        max_backlog=100,
        is_lagging=lambda tp: tp.topic in lagging,
        by_priority=by_priority,
    )
    return {tp.topic for tp in kept}


def test_every_partition_is_polled_when_nothing_lags() -> None:
    assert _poll(set()) == {*TOPICS, "events"}


def test_high_lag_keeps_medium_and_low_out_and_medium_lag_keeps_low_out() -> None:
    assert _poll({"r.high", "r.low"}) == {"r.high", "events"}
    assert _poll({"r.medium", "r.low"}) == {"r.high", "r.medium", "events"}
    assert _poll({"r.low"}) == {*TOPICS, "events"}
    assert _poll({"r.high"}, by_priority=False) == {*TOPICS, "events"}


def test_an_agent_holding_enough_records_is_not_fed_more() -> None:
    assert _poll(set(), {Priority.LOW: 100}) == {"r.high", "r.medium", "events"}
    assert _poll(set(), {Priority.HIGH: 150}) == {"r.medium", "r.low", "events"}


async def test_low_waits_while_high_is_queued_or_in_flight_and_only_briefly_for_lag() -> None:
    gate = PriorityGate(max_lag_wait=0.05)
    queued = {Priority.HIGH: 1}
    gate.track(Priority.HIGH, lambda: queued[Priority.HIGH])
    gate.track_lag(Priority.MEDIUM, lambda: True)
    order: list[str] = []

    async def low() -> None:
        await gate.wait_turn(Priority.LOW)
        order.append("low")

    async def high() -> None:
        queued[Priority.HIGH] = 0
        with gate.busy(Priority.HIGH):
            await asyncio.sleep(0.02)
            order.append("high")

    waiting = asyncio.create_task(low())
    await asyncio.sleep(0.01)
    assert order == []
    await high()
    await waiting
    assert order == ["high", "low"]
    # Medium lag alone (no records held) delays low by at most max_lag_wait.
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await gate.wait_turn(Priority.LOW)
    assert loop.time() - started < 0.5
    assert not await gate.wait_turn(Priority.HIGH)


def test_a_lag_that_never_moves_stops_counting() -> None:
    class State:
        highwater, position, has_valid_position = 8, 7, True

    class Assignment:
        def state_value(self, tp: object) -> State:
            return State()

    class Client:
        class _subscription:  # mimics the Kafka client's attribute path
            class subscription:
                assignment = Assignment()

    probe = LagProbe(stale_after=0.05)
    tp = TP("r.high", 0)
    assert probe(Client(), tp)
    assert probe(Client(), tp)
    time.sleep(0.06)
    assert not probe(Client(), tp), "a highwater no record reaches must not hold lower priorities back"
    State.position = 8
    assert not probe(Client(), tp)
