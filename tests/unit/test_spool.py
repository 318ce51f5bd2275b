"""The on-disk spool: round trips, torn and corrupt records, bounds, cursor, segments and locking."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from producers.sender.spool import (
    MAGIC,
    SEGMENT_START,
    Spool,
    SpoolError,
    decode_body,
    decode_record,
    encode_record,
    open_spool,
    scan,
)


def _records(n: int, start: int = 0) -> list[tuple[str, bytes | None, bytes]]:
    return [
        (f"ns.topic.{i % 3}", None if i % 5 == 0 else f"s{i}".encode(), f"v{i}".encode() * (i % 7))
        for i in range(start, start + n)
    ]


def _open(path: Path, **overrides: float) -> Spool:
    options = {"max_bytes": 1 << 20, "segment_bytes": 1 << 16, "fsync_interval_s": 0.0, **overrides}
    return Spool(path, **options)  # type: ignore[arg-type]


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = _open(tmp_path / "spool")
    yield s
    s.close()


def _read_all(s: Spool) -> list[tuple[str, bytes | None, bytes]]:
    out: list[tuple[str, bytes | None, bytes]] = []
    while batch := s.read(1000):
        out.extend((r.topic, r.key, r.value) for r in batch)
    return out


def test_encode_decode_round_trip() -> None:
    for topic, key, value in [("t", None, b""), ("tø", b"", b"x"), ("t", b"k" * 300, b"\x00" * 70_000)]:
        record = encode_record(topic, key, value)
        assert decode_body(record[8:]) == (topic, key, value)


def test_append_then_read_in_order(spool: Spool) -> None:
    records = _records(500)
    assert len(spool.append(encode_record(*r) for r in records)) == 500
    assert _read_all(spool) == records
    assert spool.fully_read
    assert not spool.empty


def test_every_truncation_of_the_last_record_loses_only_that_record() -> None:
    records = [encode_record(*r) for r in _records(4, start=1)]
    data = b"".join(records)
    last_start = len(data) - len(records[-1])
    for cut in range(last_start, len(data)):
        result = scan(data[:cut], 0, 100)
        assert len(result.records) == 3
        assert result.stop == last_start
        assert result.status == ("clean" if cut == last_start else "partial")
    assert len(scan(data, 0, 100).records) == 4


def test_a_flipped_bit_is_caught_by_the_crc() -> None:
    data = bytearray(b"".join(encode_record(*r) for r in _records(3, start=1)))
    data[-2] ^= 0x10
    result = scan(bytes(data), 0, 100)
    assert (len(result.records), result.status) == (2, "bad")


def test_torn_tail_after_a_crash_is_skipped_and_new_records_survive(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "spool"
    first = _open(directory)
    first.append(encode_record(*r) for r in _records(10))
    first.close()
    segment = next(directory.glob("*.seg"))
    # A crash mid-write: half a record at the end of the segment.
    with segment.open("ab") as file:
        file.write(encode_record("t", b"k", b"torn" * 10)[:13])
    second = _open(directory)
    second.append(encode_record(*r) for r in _records(5, start=10))
    with caplog.at_level(logging.WARNING):
        assert _read_all(second) == _records(15)
    assert "torn record" in caplog.text
    second.close()


def test_corruption_mid_segment_skips_the_rest_of_that_segment_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "spool"
    first = _open(directory)
    first.append(encode_record(*r) for r in _records(10))
    first.close()
    segment = next(directory.glob("*.seg"))
    raw = bytearray(segment.read_bytes())
    second_record = SEGMENT_START + len(encode_record(*_records(1)[0]))
    raw[second_record + 9] ^= 0xFF
    segment.write_bytes(bytes(raw))
    again = _open(directory)
    again.append(encode_record(*r) for r in _records(3, start=10))
    with caplog.at_level(logging.ERROR):
        assert _read_all(again) == _records(1) + _records(3, start=10)
    assert "corrupt" in caplog.text
    again.close()


def test_bounded_by_bytes(tmp_path: Path) -> None:
    s = _open(tmp_path / "spool", max_bytes=1 << 16, segment_bytes=1 << 12)
    record = encode_record("t", b"k", b"x" * 1000)
    written = s.append([record] * 100)
    assert 0 < len(written) < 100
    assert s.size_bytes <= 1 << 16
    assert s.append([record]) == []
    s.close()


def test_commit_deletes_segments_behind_the_cursor(tmp_path: Path) -> None:
    s = _open(tmp_path / "spool", segment_bytes=1 << 12)
    positions = s.append(encode_record("t", b"k", b"x" * 500) for _ in range(40))
    segments = {p.segment for p in positions}
    assert len(segments) > 3
    s.read(40)
    s.commit(positions[19])
    on_disk = {int(p.stem) for p in (tmp_path / "spool").glob("*.seg")}
    assert min(on_disk) == positions[19].segment or min(on_disk) == positions[20].segment
    s.commit(positions[-1])
    assert s.empty
    assert list((tmp_path / "spool").glob("*.seg")) == []
    assert s.size_bytes == 0
    s.close()


def test_cursor_survives_a_restart(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    s = _open(directory)
    positions = s.append(encode_record(*r) for r in _records(20))
    s.read(20)
    s.commit(positions[11])
    s.close()
    assert json.loads((directory / "cursor.json").read_text()) == {
        "segment": positions[11].segment,
        "offset": positions[11].offset,
    }
    again = _open(directory)
    assert _read_all(again) == _records(8, start=12)
    again.close()


def test_cursor_lost_means_replay_not_loss(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    s = _open(directory)
    positions = s.append(encode_record(*r) for r in _records(20))
    s.commit(positions[4])
    s.close()
    (directory / "cursor.json").write_text("{not json")
    again = _open(directory)
    assert _read_all(again) == _records(20)
    again.close()


def test_seek_rereads(spool: Spool) -> None:
    spool.append(encode_record(*r) for r in _records(5))
    batch = spool.read(5)
    spool.seek(batch[2].start)
    assert [r.value for r in spool.read(5)] == [r.value for r in batch[2:]]


def test_a_record_larger_than_a_read_chunk(spool: Spool) -> None:
    big = ("t", b"k", b"z" * (3 << 20))
    spool.max_bytes = 16 << 20
    spool.segment_bytes = 16 << 20
    spool.append([encode_record(*big), encode_record("t", None, b"after")])
    assert _read_all(spool) == [big, ("t", None, b"after")]


def test_one_process_per_directory_and_slots(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    first = open_spool(root, max_bytes=1 << 20, segment_bytes=1 << 16, fsync_interval_s=0)
    with pytest.raises(SpoolError, match="in use"):
        _open(first.directory)
    second = open_spool(root, max_bytes=1 << 20, segment_bytes=1 << 16, fsync_interval_s=0)
    assert (first.directory.name, second.directory.name) == ("slot-0", "slot-1")
    first.close()
    third = open_spool(root, max_bytes=1 << 20, segment_bytes=1 << 16, fsync_interval_s=0)
    assert third.directory.name == "slot-0"
    second.close()
    third.close()


def test_segments_start_with_the_magic(spool: Spool) -> None:
    spool.append([encode_record("t", None, b"v")])
    segment = next(spool.directory.glob("*.seg"))
    assert segment.read_bytes()[:SEGMENT_START] == MAGIC


def test_a_cursor_that_outlived_its_segments_never_hides_new_ones(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    first = _open(directory)
    for _ in range(3):  # drain a few times: segment ids move on, the cursor follows
        positions = first.append(encode_record(*r) for r in _records(5))
        first.read(5)
        first.commit(positions[-1])
    first.close()
    assert list(directory.glob("*.seg")) == []
    second = _open(directory)
    second.append(encode_record(*r) for r in _records(4))
    # A crash: the cursor on disk is the old one, the new records are not committed.
    os.close(second._lock_fd)
    third = _open(directory)
    assert _read_all(third) == _records(4)
    third.close()


def test_extend_writes_what_append_writes(tmp_path: Path) -> None:
    """The sender's fast path: same bytes, same segments, same bound, rolls and all."""
    records = [encode_record(*r) for r in _records(400)]
    by_append = _open(tmp_path / "a", max_bytes=1 << 13, segment_bytes=1 << 10)
    by_extend = _open(tmp_path / "e", max_bytes=1 << 13, segment_bytes=1 << 10)
    written = [0, 0]
    for start in range(0, len(records), 37):
        batch = records[start : start + 37]
        written[0] += len(by_append.append(batch))
        written[1] += by_extend.extend(batch)
    assert written[0] == written[1] < len(records)  # the bound was reached the same way
    assert by_extend.extend([]) == 0
    for name in ("a", "e"):
        assert len(list((tmp_path / name).glob("*.seg"))) > 3
    a, e = sorted((tmp_path / "a").glob("*.seg")), sorted((tmp_path / "e").glob("*.seg"))
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in e]
    by_append.close()
    by_extend.close()


def test_decode_record_reads_what_encode_record_wrote() -> None:
    for topic, key, value in [("t", None, b""), ("tø", b"", b"x"), ("ns.t", b"k" * 300, b"\x00" * 70_000)]:
        assert decode_record(encode_record(topic, key, value)) == (topic, key, value)
    with pytest.raises(ValueError, match="key runs past"):
        decode_record(encode_record("t", b"key", b"")[:-2])
