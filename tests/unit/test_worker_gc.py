"""A started worker's heap is frozen out of garbage collections, and young ones are rarer (``streams.app.tune_gc``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streams.app import GC_YOUNG_THRESHOLD, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_what_is_alive_at_start_is_frozen_and_the_young_generation_waits_longer() -> None:
    gc.set_threshold(700, 10, 10)
    started = [[i] for i in range(1000)]  # alive when the worker has started: tracked by the collector
    assert gc.is_tracked(started[0])
    tune_gc()
    assert gc.get_freeze_count() >= len(started)
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, 10, 10)


@pytest.mark.usefixtures("restored_gc")
def test_a_higher_threshold_is_kept() -> None:
    gc.set_threshold(50_000, 10, 10)  # the projector's, in the same process (herald dev)
    tune_gc()
    assert gc.get_threshold() == (50_000, 10, 10)
