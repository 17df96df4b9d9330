"""``streams.internals.SparseFetch``: the event log's partitions asked for in at most one fetch per interval."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import FetchRequest

from streams.internals import REQUIRED, SparseFetch, check_internals

LOG = "h.events"
REQUESTS = "h.requests.high"


class Assignment:
    def __init__(self, tps: list[TopicPartition]) -> None:
        self.tps = set(tps)

    def state_value(self, tp: TopicPartition) -> str:
        return f"state of {tp.topic}/{tp.partition}"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def planner(seen: list[list[TopicPartition]]) -> Any:
    """A stand-in for aiokafka's ``_get_actions_per_node``: one request asking for every partition it is shown."""

    def plan(assignment: Any) -> Any:
        tps = sorted(assignment.tps)
        seen.append(tps)
        for tp in tps:
            assert assignment.state_value(tp) == f"state of {tp.topic}/{tp.partition}"
        by_topic: dict[str, list[tuple[int, int, int]]] = {}
        for tp in tps:
            by_topic.setdefault(tp.topic, []).append((tp.partition, 0, 1024))
        request = FetchRequest(20, 1, 1024, 0, list(by_topic.items()))
        return [(0, request)] if tps else [], {}, 0.2, False, []

    return plan


def test_the_log_is_asked_for_once_an_interval_and_the_rest_in_every_fetch() -> None:
    tps = [TopicPartition(LOG, 0), TopicPartition(LOG, 1), TopicPartition(REQUESTS, 0), TopicPartition(REQUESTS, 1)]
    clock = Clock()
    sparse = SparseFetch({LOG}, 0.1, clock=clock)
    seen: list[list[TopicPartition]] = []
    plan = planner(seen)
    assignment = Assignment(tps)

    requests, _resets, timeout, _invalid, _resumes = sparse.plan(plan, assignment)
    assert {tp.topic for tp in seen[-1]} == {LOG, REQUESTS}  # first step: everything
    assert timeout == 0.2

    clock.now += 0.03
    requests, _resets, timeout, _invalid, _resumes = sparse.plan(plan, assignment)
    assert {tp.topic for tp in seen[-1]} == {REQUESTS}
    assert [topic for topic, _ in requests[0][1].topics] == [REQUESTS]
    assert abs(timeout - 0.07) < 1e-9  # woken for the log's next turn

    clock.now += 0.07
    sparse.plan(plan, assignment)
    assert {tp.topic for tp in seen[-1]} == {LOG, REQUESTS}  # its turn
    clock.now += 0.001
    sparse.plan(plan, assignment)
    assert {tp.topic for tp in seen[-1]} == {REQUESTS}


def test_a_turn_without_a_request_for_the_log_keeps_it_due() -> None:
    """The broker busy with a fetch (no request built): the log goes in the next request built."""
    clock = Clock()
    sparse = SparseFetch({LOG}, 0.1, clock=clock)
    nothing: Any = lambda assignment: ([], {}, 0.2, False, [])  # noqa: E731
    sparse.plan(nothing, Assignment([TopicPartition(LOG, 0)]))
    seen: list[list[TopicPartition]] = []
    clock.now += 0.01
    sparse.plan(planner(seen), Assignment([TopicPartition(LOG, 0), TopicPartition(REQUESTS, 0)]))
    assert {tp.topic for tp in seen[-1]} == {LOG, REQUESTS}


def test_it_wraps_a_fetcher_in_place_and_the_internals_it_needs_are_there() -> None:
    check_internals(item for item in REQUIRED if "fetch interval" in item.used_by)

    class Fetcher:
        def __init__(self) -> None:
            self.seen: list[list[TopicPartition]] = []

        def _get_actions_per_node(self, assignment: Any) -> Any:
            return planner(self.seen)(assignment)

    fetcher = Fetcher()
    clock = Clock()
    SparseFetch({LOG}, 0.1, clock=clock).install(fetcher)
    assignment = Assignment([TopicPartition(LOG, 0), TopicPartition(REQUESTS, 0)])
    fetcher._get_actions_per_node(assignment)
    clock.now += 0.05
    fetcher._get_actions_per_node(assignment)
    assert [{tp.topic for tp in tps} for tps in fetcher.seen] == [{LOG, REQUESTS}, {REQUESTS}]
