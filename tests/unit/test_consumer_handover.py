"""A process that builds Faust's consumer (its own thread) hands the GIL over sooner (``streams.consumer``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import faust
import pytest

from streams.consumer import SWITCH_INTERVAL, install_fetch_wait


@pytest.fixture
def switch_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


async def test_building_the_consumer_lowers_the_switch_interval(switch_interval: None) -> None:
    sys.setswitchinterval(0.005)  # Python's default
    app = faust.App("test-consumer-handover", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
    install_fetch_wait(app, 20)
    consumer: Any = app.consumer
    try:
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
        assert consumer._thread is not None  # Faust's consumer thread, where fetch answers are read
    finally:
        consumer._thread.thread_loop.close()


async def test_a_lower_interval_set_by_the_operator_is_kept(switch_interval: None) -> None:
    sys.setswitchinterval(0.0001)
    app = faust.App("test-consumer-handover-2", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
    install_fetch_wait(app, 20)
    consumer: Any = app.consumer
    try:
        assert sys.getswitchinterval() == pytest.approx(0.0001)
    finally:
        consumer._thread.thread_loop.close()
