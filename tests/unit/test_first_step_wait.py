"""``FirstStepWait``: Faust's per-record ``wait_first`` without a task when the record's callback finishes at once.

The consumer's drain loop awaits ``wait_first(callback(message), suspend_flow.wait())`` per
record; mode makes four tasks for it. Here the callback's first step runs first: a callback
that finishes there needs no task; one that waits races the flow's wait exactly as before
(it finishes, or is cancelled when the flow is suspended first), and its errors propagate.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine
from typing import Any

import pytest
from mode import Service

from streams.internals import FirstStepWait


class _Service(FirstStepWait, Service):
    pass


def _counting_tasks(loop: asyncio.AbstractEventLoop) -> list[Any]:
    made: list[Any] = []
    previous = loop.get_task_factory()

    def factory(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any) -> Any:
        made.append(coro)
        return previous(loop, coro, **kwargs) if previous else asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)  # type: ignore[arg-type]
    return made


async def test_a_callback_that_finishes_at_once_makes_no_task() -> None:
    service = _Service()
    flow = asyncio.Event()
    made = _counting_tasks(asyncio.get_running_loop())

    async def callback() -> str:
        return "queued"

    waiting = flow.wait()
    result = await service.wait_first(callback(), waiting)
    assert (result.done and result.results, result.stopped) == (["queued"], False)
    assert made == [] and inspect.getcoroutinestate(waiting) == inspect.CORO_CLOSED


async def test_a_callback_that_waits_is_finished_by_the_loop() -> None:
    service = _Service()
    flow = asyncio.Event()
    space: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def callback() -> str:
        steps.append("first step")
        await space  # a full queue
        steps.append("resumed")
        await asyncio.sleep(0)
        return "queued"

    asyncio.get_running_loop().call_later(0.01, space.set_result, None)
    result = await asyncio.wait_for(service.wait_first(callback(), flow.wait()), 5)
    assert result.results == ["queued"] and steps == ["first step", "resumed"]


async def test_a_waiting_callback_is_cancelled_when_the_flow_is_suspended_first() -> None:
    service = _Service()
    flow = asyncio.Event()
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ended: list[str] = []

    async def callback() -> None:
        try:
            await never
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise

    asyncio.get_running_loop().call_later(0.01, flow.set)
    result = await asyncio.wait_for(service.wait_first(callback(), flow.wait()), 5)
    assert result.results == [True] and not result.stopped
    await asyncio.sleep(0)
    assert ended == ["cancelled"]


async def test_errors_propagate_at_the_first_step_and_after_a_wait() -> None:
    service = _Service()
    flow = asyncio.Event()

    async def at_once() -> None:
        raise ValueError("undecodable")

    waiting = flow.wait()
    with pytest.raises(ValueError, match="undecodable"):
        await service.wait_first(at_once(), waiting)
    assert inspect.getcoroutinestate(waiting) == inspect.CORO_CLOSED

    async def later() -> None:
        await asyncio.sleep(0.01)
        raise KeyError("later")

    with pytest.raises(KeyError, match="later"):
        await asyncio.wait_for(service.wait_first(later(), flow.wait()), 5)


async def test_other_calls_are_mode_s_own() -> None:
    service = _Service()
    made = _counting_tasks(asyncio.get_running_loop())

    async def one() -> int:
        return 1

    result = await service.wait_first(one(), timeout=1)  # Service.wait's form: a timeout
    assert result.results == [1] and made  # mode's tasks
