"""The API's publisher partitions keys itself, exactly as the producer's default partitioner would."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from api.publisher import Publisher
from engine.partitioning import HASHES_KEPT
from engine.topics import TopicNames


def _publisher(partitions: dict[str, set[int]]) -> Publisher:
    cluster = SimpleNamespace(
        partitions_for_topic=lambda topic: set(partitions[topic]) if topic in partitions else None
    )
    producer: Any = SimpleNamespace(client=SimpleNamespace(cluster=cluster))
    return Publisher(producer, TopicNames("p."))


@pytest.mark.parametrize("count", [1, 3, 4, 12, 64])
def test_a_keys_partition_is_the_default_partitioners(count: int) -> None:
    publisher = _publisher({"t": set(range(count))})
    rng = random.Random(count)
    keys = [rng.randbytes(rng.randrange(1, 60)) for _ in range(500)] + [b"u1", b"u2"]
    for key in keys * 2:  # the second time from the remembered hash
        expected = DefaultPartitioner()(key, list(set(range(count))), list(range(count)))
        assert publisher.partition("t", key) == expected


def test_an_unknown_topic_is_left_to_the_producer_and_the_hashes_kept_are_bounded() -> None:
    publisher = _publisher({"t": {0, 1, 2, 3}})
    assert publisher.partition("other", b"u1") is None
    for i in range(HASHES_KEPT + 10):
        publisher.partition("t", str(i).encode())
    assert len(publisher._keys) <= HASHES_KEPT
