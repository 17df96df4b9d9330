"""A started api role's heap is frozen out of garbage collections and young ones are rarer
(``herald.stack.API_GC_YOUNG_THRESHOLD``): its full collections paused every connection 50-110 ms
in a burst when they walked the start-up heap too."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from herald.stack import API_GC_YOUNG_THRESHOLD, run_stack
from tests.support.api import isolated_settings, own_database


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
async def test_a_started_api_collects_less_often_and_never_walks_its_start_up_heap(
    kafka_bootstrap: str, redis_url: str
) -> None:
    with own_database("herald_api_gc") as url:
        settings = isolated_settings(kafka_bootstrap, url, redis_url)
        async with run_stack(settings, worker=False, projector=False) as stack:
            assert stack.http_port
            assert gc.get_threshold()[0] == API_GC_YOUNG_THRESHOLD
            assert gc.get_freeze_count() > 10_000  # modules, the app, its routes: all frozen
