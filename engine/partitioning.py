"""Kafka's default partitioning of a keyed record, worked out without the client's pure-Python hash.

aiokafka's ``DefaultPartitioner`` hashes every key with a pure-Python murmur2 (16 us for a
UUID on this project's test machine, about a twentieth of the worker's CPU in a 20,000-user
bulk). ``murmur2`` here is the same function in half the time, and ``KeyPartitions``
remembers a key's hash: the api's publisher and the worker's sends give each record the
partition the default partitioner would (tests/unit/test_partitioning.py).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection

HASHES_KEPT = 65536
"""Keys whose hash a ``KeyPartitions`` remembers (the same users again and again: acceptances,
deliveries, receipts); past it the remembered hashes start over."""

_M = 0x5BD1E995
_WORDS: list[Callable[[bytes], tuple[int, ...]]] = [struct.Struct(f"<{n}I").unpack_from for n in range(64)]


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of ``data`` (as ``aiokafka.partitioner.murmur2``), reading 4-byte words at once."""
    length = len(data)
    words = length >> 2
    unpack = _WORDS[words] if words < len(_WORDS) else struct.Struct(f"<{words}I").unpack_from
    h = 0x9747B28C ^ length
    for k in unpack(data):
        k = (k * _M) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * _M) & 0xFFFFFFFF
        h = ((h * _M) & 0xFFFFFFFF) ^ k
    extra = length & 3
    if extra:
        tail = length - extra
        if extra == 3:
            h ^= data[tail + 2] << 16
        if extra >= 2:
            h ^= data[tail + 1] << 8
        h = ((h ^ data[tail]) * _M) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * _M) & 0xFFFFFFFF
    return h ^ (h >> 15)


class KeyPartitions:
    """The partition the default partitioner gives a key, with the key's hash remembered (bounded)."""

    __slots__ = ("_hashes", "_kept")

    def __init__(self, kept: int = HASHES_KEPT) -> None:
        self._hashes: dict[bytes, int] = {}
        self._kept = kept

    def __len__(self) -> int:
        """Keys whose hash is remembered now."""
        return len(self._hashes)

    def choose(self, key: bytes, partitions: Collection[int]) -> int:
        """As ``DefaultPartitioner()(key, list(partitions), ...)`` for a key: ``partitions`` as the
        client's cluster metadata gives them (``partitions_for_topic``), never empty."""
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self._kept:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        choices = list(partitions)
        return int(choices[hashed % len(choices)])
