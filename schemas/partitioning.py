"""Which partition a message key lands on: Kafka's murmur2 partitioner, as part of the contract.

Every event of a session is keyed by ``session_id`` and must meet the others in one partition, so
every producer of the input topics uses the partitioner of the Java client's default
(``Utils.murmur2`` of the key bytes, ``toPositive(h) % partitions``); librdkafka calls it
``murmur2_random`` (keyless messages go to a random partition there, and have no partition here).
Tools that route keys without a broker (the offline pipeline, tests) use this function so they
place every key where the real producers do.
"""

from __future__ import annotations

import struct

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` of ``data``: a signed 32-bit integer, as the Java client returns it."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    body = length - length % 4
    # Java's int arithmetic, kept in 32 unsigned bits after every multiplication.
    for (k,) in struct.iter_unpack("<I", data[:body]):
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length - body
    if tail:
        if tail == 3:
            h ^= data[body + 2] << 16
        if tail >= 2:
            h ^= data[body + 1] << 8
        h ^= data[body]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives ``key`` on a topic of ``partitions``."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, got {partitions}")
    return (murmur2(key) & 0x7FFFFFFF) % partitions
