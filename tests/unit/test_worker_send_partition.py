"""The worker's sends (``streams.publish.send``) partition keys themselves, exactly as aiokafka's default
partitioner would (tests/integration/test_worker_send.py checks the records on a real broker)."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from engine.partitioning import HASHES_KEPT
from streams import publish
from streams.publish import partition_of


def _client(partitions: dict[str, set[int]], partitioner: Any = None) -> Any:
    cluster = SimpleNamespace(
        partitions_for_topic=lambda topic: set(partitions[topic]) if topic in partitions else None
    )
    return SimpleNamespace(client=SimpleNamespace(cluster=cluster), _partitioner=partitioner or DefaultPartitioner())


@pytest.mark.parametrize("count", [1, 3, 4, 12, 64])
def test_a_keys_partition_is_the_default_partitioners(count: int) -> None:
    client = _client({"t": set(range(count))})
    rng = random.Random(count)
    keys = [rng.randbytes(rng.randrange(0, 60)) for _ in range(500)] + [b"", b"u1", "ünï".encode()]
    for key in keys * 2:  # the second time from the remembered hash
        expected = DefaultPartitioner()(key, list(set(range(count))), list(range(count)))
        assert partition_of(client, "t", key) == expected


def test_unknown_topics_and_other_partitioners_are_left_to_the_producer() -> None:
    assert partition_of(_client({"t": {0, 1}}), "other", b"u1") is None
    assert partition_of(_client({"t": set()}), "t", b"u1") is None
    assert partition_of(_client({"t": {0, 1}}, partitioner=lambda *args: 0), "t", b"u1") is None


def test_the_hashes_kept_are_bounded() -> None:
    client = _client({"t": {0, 1, 2, 3}})
    for i in range(HASHES_KEPT + 10):
        partition_of(client, "t", f"bound-{i}".encode())
    assert len(publish._keys) <= HASHES_KEPT
