"""``PriorityGate.may_wait``: the ingest agent skips ``wait_turn`` only where it could never wait,
and ``started``/``finished`` count a record in flight as ``busy`` does."""

from __future__ import annotations

import asyncio

import pytest

from engine.priority import Priority
from streams.priority_gate import PriorityGate


def _crowded(enabled: bool) -> PriorityGate:
    """A gate where every priority has records held and records lagging."""
    gate = PriorityGate(enabled=enabled, max_lag_wait=0.02)
    for priority in Priority:
        gate.track(priority, lambda: 5)
        gate.track_lag(priority, lambda: True)
    return gate


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("priority", list(Priority))
async def test_may_wait_is_false_only_where_wait_turn_returns_at_once(enabled: bool, priority: Priority) -> None:
    gate = _crowded(enabled)
    turn = asyncio.ensure_future(gate.wait_turn(priority))
    await asyncio.sleep(0)  # one pass of the loop: a turn that cannot wait is over
    if gate.may_wait(priority):
        assert not turn.done()  # everything above it is crowded: it waits
        turn.cancel()
        await asyncio.gather(turn, return_exceptions=True)
    else:
        assert turn.done() and turn.result() is False
    assert gate.may_wait(priority) == (enabled and priority is not Priority.HIGH)


async def test_started_and_finished_count_a_record_in_flight_as_busy_does() -> None:
    gate = PriorityGate()
    gate.started(Priority.HIGH)
    assert gate.pending(Priority.HIGH) == 1 and gate.higher_pending(Priority.LOW)
    low = asyncio.ensure_future(gate.wait_turn(Priority.LOW))
    await asyncio.sleep(0.01)
    assert not low.done()
    gate.finished(Priority.HIGH)  # wakes the waiter, as leaving ``busy`` does
    assert await asyncio.wait_for(low, 1) is True
    assert gate.pending(Priority.HIGH) == 0
    with gate.busy(Priority.MEDIUM):
        assert gate.pending(Priority.MEDIUM) == 1
    assert gate.pending(Priority.MEDIUM) == 0
