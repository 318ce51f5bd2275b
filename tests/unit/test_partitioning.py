"""Kafka's murmur2 partitioner, bit for bit (the real producers' placement is checked against a broker
in tests/integration/test_partitioning.py)."""

from __future__ import annotations

import pytest

from schemas import partition_for
from schemas.partitioning import murmur2

# The first six are the cases of Kafka's own UtilsTest.testMurmur2; the rest were computed with
# org.apache.kafka.common.utils.Utils.murmur2 from kafka-clients 4.4.0 (every tail length 0-3,
# multi-byte UTF-8, bytes >= 0x80 that Java reads as negative).
JAVA_MURMUR2: list[tuple[bytes, int]] = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
    (b"", 275646681),
    (b"a", -1563381124),
    (b"ab", 316155434),
    (b"abcd", -1323649548),
    (b"abcde", 461995741),
    (b"abcdef", 1870650108),
    (b"abcdefg", -346467175),
    (b"abcdefgh", -955427363),
    (b"session-0001", -1907062098),
    (b"s42", 1180561997),
    (b"kcat-session", 484162820),
    ("ünïcødé-sessîon".encode(), -689798235),
    ("\u00ff\u00fe\u00fd".encode(), -827240790),
    (b"1700000000000|v1.0|gpt-4o|general", 347713716),
    (bytes([0x80, 0xFF, 0x00, 0x7F, 0xC3]), -562061214),
]

# toPositive(murmur2(key)) % n from the same Java run, for 6 and 12 partitions.
JAVA_PARTITIONS: list[tuple[bytes, int, int]] = [
    (b"", 3, 9),
    (b"a", 4, 4),
    (b"abcd", 2, 8),
    (b"abcdefgh", 3, 9),
    (b"foobar", 0, 6),
    (b"a-little-bit-longer-string", 5, 11),
    (b"kcat-session", 2, 8),
    ("ünïcødé-sessîon".encode(), 5, 5),
]


@pytest.mark.parametrize(("key", "expected"), JAVA_MURMUR2)
def test_murmur2_equals_the_java_client(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


@pytest.mark.parametrize(("key", "on_6", "on_12"), JAVA_PARTITIONS)
def test_partition_for_equals_the_java_default_partitioner(key: bytes, on_6: int, on_12: int) -> None:
    assert (partition_for(key, 6), partition_for(key, 12)) == (on_6, on_12)


def test_every_partition_is_in_range_and_used() -> None:
    seen = {partition_for(f"session-{i}".encode(), 7) for i in range(500)}
    assert seen == set(range(7))


def test_a_topic_without_partitions_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one partition"):
        partition_for(b"s1", 0)
