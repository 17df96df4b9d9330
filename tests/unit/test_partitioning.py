"""Kafka's murmur2 and default partitioning as worked out by ``engine.partitioning`` (the api's publisher
and the worker's sends use it: tests/unit/test_publisher_partition.py, test_worker_send_partition.py)."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from engine.partitioning import KeyPartitions, murmur2


def test_murmur2_is_kafkas_for_every_length() -> None:
    rng = random.Random(9)
    for length in range(300):
        for _ in range(10):
            data = rng.randbytes(length)
            assert murmur2(data) == aiokafka_murmur2(data), length
    for key in (b"", b"u1", "ünï\u2028cödé".encode(), b"0192f0c2-7a1b-7c3d-8e4f-123456789abc"):
        assert murmur2(key) == aiokafka_murmur2(key)


def test_a_remembered_hash_gives_the_same_partition_and_the_memory_starts_over_when_full() -> None:
    keys = KeyPartitions(kept=100)
    partitions = {0, 1, 2, 3, 4, 5}
    names = [f"user-{i}".encode() for i in range(250)]
    first = [keys.choose(k, partitions) for k in names]
    assert len(keys) <= 100
    again = [keys.choose(k, partitions) for k in names]
    expected = [DefaultPartitioner()(k, list(partitions), list(partitions)) for k in names]
    assert first == again == expected
