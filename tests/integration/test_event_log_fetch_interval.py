"""``HERALD_KAFKA_EVENT_LOG_FETCH_INTERVAL_MS``: the worker asks for the event log in at most one fetch
per interval (``streams.internals.SparseFetch``). On a real broker: requests are still decided and the
log still committed to its end, a contact update in the log still changes routing, and the worker's
fetches that carried the log were spaced by the interval while the others were not."""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka.consumer.fetcher import Fetcher

from engine.routing import TURNED_OFF
from engine.settings import Settings
from engine.topics import TopicNames
from herald.stack import Stack, run_stack
from tests.integration.stream_core_support import core_settings
from tests.integration.test_event_log_skip import _append_contact, _committed_to_the_end, _json, _requests
from tests.support.kafka import publish, request
from tests.support.log_reader import TopicTail

pytestmark = pytest.mark.slow

USERS = 24
INTERVAL_MS = 300


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str, redis_url: str) -> Settings:
    return core_settings(kafka_bootstrap, redis_url, kafka_event_log_fetch_interval_ms=INTERVAL_MS)


@pytest.fixture(scope="module")
def fetches() -> list[tuple[float, bool]]:
    """Every fetch request the process builds: (time, whether it asks for the event log)."""
    return []


@pytest.fixture(scope="module")
async def stack(settings: Settings, fetches: list[tuple[float, bool]]) -> AsyncIterator[Stack]:
    log_topic = TopicNames(settings.topic_prefix).events
    proc = Fetcher._proc_fetch_request

    async def noted(self: Any, assignment: Any, node_id: Any, fetch: Any) -> Any:
        if "_get_actions_per_node" in vars(self):  # a fetcher SparseFetch plans: the worker's
            fetches.append((time.monotonic(), any(topic == log_topic for topic, _ in fetch.topics)))
        return await proc(self, assignment, node_id, fetch)

    Fetcher._proc_fetch_request = noted  # type: ignore[method-assign]
    try:
        async with run_stack(settings, worker=True, projector=False, api=False) as running:
            yield running
    finally:
        Fetcher._proc_fetch_request = proc  # type: ignore[method-assign]


@pytest.fixture(scope="module")
async def log(stack: Stack, settings: Settings) -> AsyncIterator[TopicTail]:
    async with TopicTail.running(settings.kafka_bootstrap, TopicNames(settings.topic_prefix).events) as tail:
        yield tail


async def test_requests_are_decided_a_contact_in_the_log_still_routes_and_log_fetches_are_spaced(
    stack: Stack, settings: Settings, log: TopicTail, fetches: list[tuple[float, bool]]
) -> None:
    names = TopicNames(settings.topic_prefix)
    run = uuid.uuid4().hex[:6]
    users = [f"sparse-{run}-{i}" for i in range(USERS)]
    began = time.monotonic()

    await _requests(settings, names, users, "first")
    await log.wait_events(USERS, type="delivery.deferred", within=60)

    # A contact update among more notification events: folded up to an interval later than without
    # the setting, so a request may be routed before it; one is sent every half second until one is
    # routed with it.
    mo = f"sparse-{run}-contact"
    await _append_contact(settings, names, mo, channels=("email",))
    await _requests(settings, names, users, "second")

    def cancelled() -> list[dict[str, Any]]:
        return [e for e in log.events(type="delivery.cancelled") if e["data"]["user_id"] == mo]

    deadline = time.monotonic() + 60
    while not cancelled():
        assert time.monotonic() < deadline, "the contact update never changed routing"
        body = request(mo, "Mail only", channels=["websocket", "email"])
        await publish(settings.kafka_bootstrap, names.request("medium"), [(mo.encode(), _json(body))])
        with contextlib.suppress(AssertionError):
            await log.wait(cancelled, within=0.5, what="the websocket delivery cancelled")
    first = cancelled()[0]
    assert (first["data"]["channel"], first["data"]["reason"]) == ("websocket", TURNED_OFF)
    await log.wait_events(2 * USERS, type="delivery.deferred", within=60)
    await _committed_to_the_end(settings, names.events)

    # The worker's fetches since the test began: those that asked for the log at least an interval
    # apart (less the time from building a request to sending it), the others in between.
    spaced = [at for at, carries in fetches if at >= began and carries]
    others = [at for at, carries in fetches if at >= began and not carries]
    assert len(spaced) >= 2 and len(others) > len(spaced), (len(spaced), len(others))
    gaps = [b - a for a, b in itertools.pairwise(spaced)]
    assert min(gaps) >= INTERVAL_MS / 1000 * 0.9, gaps
