"""The on-disk spool: round trips, torn and corrupt records, bounds, cursor, segments and locking."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from producers.sender.spool import (
    HEADER_BYTES,
    MAGIC,
    MAGIC_V1,
    RECORD_MARK,
    SEGMENT_START,
    Spool,
    SpoolError,
    check_spool_root,
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
        assert decode_body(record[HEADER_BYTES:]) == (topic, key, value)


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


def test_corruption_mid_segment_costs_that_record_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "spool"
    first = _open(directory)
    first.append(encode_record(*r) for r in _records(10))
    first.close()
    segment = next(directory.glob("*.seg"))
    raw = bytearray(segment.read_bytes())
    second_record = SEGMENT_START + len(encode_record(*_records(1)[0]))
    raw[second_record + HEADER_BYTES + 1] ^= 0xFF
    segment.write_bytes(bytes(raw))
    again = _open(directory)
    again.append(encode_record(*r) for r in _records(3, start=10))
    with caplog.at_level(logging.ERROR):
        assert _read_all(again) == _records(1) + _records(8, start=2) + _records(3, start=10)
    assert f"damaged record at offset {second_record}" in caplog.text
    assert again.skipped_records == 1
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


# -- damage, bad cursors, permissions, write failures (issue 11) -----------------------------------


def _one_full_segment(directory: Path, count: int) -> tuple[Path, list[bytes], list[int]]:
    """``count`` records in one closed segment; returns it, the records and where each starts."""
    s = _open(directory, max_bytes=64 << 20, segment_bytes=16 << 20)
    records = [
        encode_record(f"ns.t{i % 2}", f"s{i}".encode(), b'{"seq": %d}' % i + b"x" * (i % 50))
        for i in range(count)
    ]
    ends = s.append(records)
    s.close()
    starts = [SEGMENT_START] + [p.offset for p in ends[:-1]]
    return next(directory.glob("*.seg")), records, starts


@pytest.mark.parametrize(
    "where",
    ["mark", "length", "crc", "topic", "value", "last byte"],
)
def test_a_damaged_byte_costs_one_record_not_the_rest_of_the_segment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    """Measured before: one changed byte lost the rest of a 16 MiB segment (2,728 events)."""
    directory = tmp_path / "spool"
    segment, records, starts = _one_full_segment(directory, 3000)
    victim = 1500
    offset = {"mark": 1, "length": 5, "crc": 9, "topic": HEADER_BYTES + 3, "value": -20, "last byte": -1}[
        where
    ]
    at = starts[victim] + offset if offset >= 0 else starts[victim] + len(records[victim]) + offset
    raw = bytearray(segment.read_bytes())
    raw[at] ^= 0x5A
    segment.write_bytes(bytes(raw))
    again = _open(directory, max_bytes=64 << 20, segment_bytes=16 << 20)
    with caplog.at_level(logging.ERROR):
        values = [r[2] for r in _read_all(again)]
    expected = [decode_record(r)[2] for i, r in enumerate(records) if i != victim]
    assert values == expected
    assert again.skipped_records == 1
    # Logged once, with the segment and the offset of the damaged record.
    damage = [r.getMessage() for r in caplog.records if "damaged record" in r.getMessage()]
    assert len(damage) == 1
    assert segment.name in damage[0]
    assert f"offset {starts[victim]}" in damage[0]
    # Read again (a producer reset seeks back): neither counted nor logged twice.
    again.seek(again.committed)
    assert len(_read_all(again)) == 2999
    assert again.skipped_records == 1
    assert len([r for r in caplog.records if "damaged record" in r.getMessage()]) == 1
    again.close()


def test_a_damaged_stretch_costs_the_records_in_it(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    segment, records, starts = _one_full_segment(directory, 200)
    raw = bytearray(segment.read_bytes())
    raw[starts[50] + 3 : starts[53] + 5] = b"\x00" * (starts[53] + 5 - starts[50] - 3)  # 50..53 zeroed
    segment.write_bytes(bytes(raw))
    again = _open(directory, max_bytes=64 << 20, segment_bytes=16 << 20)
    values = [r[2] for r in _read_all(again)]
    assert values == [decode_record(r)[2] for i, r in enumerate(records) if not 50 <= i <= 53]
    assert again.skipped_records >= 1
    again.close()


def test_a_torn_tail_in_the_middle_of_the_file_does_not_swallow_what_follows(tmp_path: Path) -> None:
    """A write cut short that could not be truncated away (the segment is then abandoned)."""
    records = [encode_record(*r) for r in _records(6)]
    data = MAGIC + b"".join(records[:3]) + records[3][:10] + b"".join(records[4:])
    directory = tmp_path / "spool"
    directory.mkdir()
    (directory / f"{1:020d}.seg").write_bytes(data)
    s = _open(directory)
    assert _read_all(s) == [r for i, r in enumerate(_records(6)) if i != 3]
    assert s.skipped_records == 1
    s.close()


def _v1_record(topic: str, key: bytes | None, value: bytes) -> bytes:
    """A record as the previous format wrote it: the same, without the mark."""
    return encode_record(topic, key, value)[len(RECORD_MARK) :]


def test_segments_of_the_previous_format_are_still_read(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    directory.mkdir()
    (directory / f"{3:020d}.seg").write_bytes(MAGIC_V1 + b"".join(_v1_record(*r) for r in _records(20)))
    (directory / "cursor.json").write_text('{"segment": 3, "offset": 8}')
    s = _open(directory)
    s.append(encode_record(*r) for r in _records(5, start=20))  # new records: the new format, a new segment
    assert _read_all(s) == _records(25)
    assert [p.read_bytes()[:SEGMENT_START] for p in sorted(directory.glob("*.seg"))] == [MAGIC_V1, MAGIC]
    s.close()


def _segments_with_records(directory: Path) -> tuple[list[tuple[str, bytes | None, bytes]], list[int]]:
    s = _open(directory, segment_bytes=1 << 10)
    records = _records(60)
    s.append(encode_record(*r) for r in records)
    s.close()
    (directory / "cursor.json").unlink(missing_ok=True)
    return records, sorted(int(p.stem) for p in directory.glob("*.seg"))


def test_a_cursor_naming_a_later_segment_replays_instead_of_skipping(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Measured before: such a cursor silently skipped every record (8,153 events)."""
    directory = tmp_path / "spool"
    records, segments = _segments_with_records(directory)
    assert len(segments) > 2
    (directory / "cursor.json").write_text(json.dumps({"segment": segments[-1] + 5, "offset": 8}))
    with caplog.at_level(logging.WARNING):
        s = _open(directory, segment_bytes=1 << 10)
        assert _read_all(s) == records
    assert "never committed" in caplog.text
    s.close()


@pytest.mark.parametrize(
    "cursor",
    [
        {"offset": -5},
        {"offset": 3},
        {"offset": 9},  # inside the first record
        {"offset": 1 << 40},
        {"offset": "8"},
        {"offset": None},
        {"segment": -1, "offset": 8},
        "[1, 2]",
    ],
    ids=[
        "negative",
        "in-the-header",
        "mid-record",
        "past-the-end",
        "a-string",
        "null",
        "negative-segment",
        "a-list",
    ],
)
def test_a_bad_cursor_falls_back_to_a_safe_position(tmp_path: Path, cursor: dict[str, object] | str) -> None:
    """Measured before: a negative offset wedged the sender (~10 tracebacks a second)."""
    directory = tmp_path / "spool"
    records, segments = _segments_with_records(directory)
    if isinstance(cursor, str):
        (directory / "cursor.json").write_text(cursor)
    else:
        (directory / "cursor.json").write_text(json.dumps({"segment": segments[0], **cursor}))
    s = _open(directory, segment_bytes=1 << 10)
    assert s.read_position >= (segments[0], SEGMENT_START)
    assert _read_all(s) == records  # from the start of the cursor's segment: nothing skipped
    s.close()


def test_a_good_cursor_on_a_record_boundary_is_kept(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    s = _open(directory, segment_bytes=1 << 10)
    positions = s.append(encode_record(*r) for r in _records(60))
    s.read(60)
    s.commit(positions[29])
    s.close()
    again = _open(directory, segment_bytes=1 << 10)
    assert _read_all(again) == _records(30, start=30)
    again.close()


def test_files_are_private_to_the_user(tmp_path: Path) -> None:
    """The spool holds prompts and responses: folders 0700, files 0600, older ones narrowed."""
    root = tmp_path / "spool"
    old = root / "slot-0"
    old.mkdir(parents=True)
    os.chmod(old, 0o750)  # noqa: S103 - as an older version left it (umask 027)
    (old / "cursor.json").write_text("{}")
    os.chmod(old / "cursor.json", 0o640)
    s = open_spool(root, max_bytes=1 << 20, segment_bytes=1 << 16, fsync_interval_s=0)
    s.append([encode_record("t", b"k", b"secret prompt")])
    s.close()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(old.stat().st_mode) == 0o700
    for path in old.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_failed_write_keeps_nothing_of_it_and_says_why(tmp_path: Path) -> None:
    fault = tmp_path / "disk-full"
    s = _open(tmp_path / "spool", segment_bytes=1 << 12)
    s.fault_file = fault
    assert len(s.append(encode_record(*r) for r in _records(5))) == 5
    size = s.size_bytes
    fault.write_text("ENOSPC")
    assert s.append(encode_record(*r) for r in _records(5, start=5)) == []
    assert s.extend([encode_record(*r) for r in _records(5, start=5)]) == 0
    assert s.write_error is not None
    assert s.write_error.errno == errno.ENOSPC
    assert s.write_errors == 2
    assert s.size_bytes == size
    assert sum(p.stat().st_size for p in s.directory.glob("*.seg")) == size  # truncated away
    assert not s.probe()
    fault.write_text("EROFS")
    assert not s.probe()
    assert s.write_error.errno == errno.EROFS
    fault.unlink()
    assert s.probe()
    assert s.write_error is None
    # 40 records roll segments: a new one could not be opened while the fault lasted.
    assert len(s.append(encode_record(*r) for r in _records(40, start=5))) == 40
    assert _read_all(s) == _records(45)
    s.close()


def test_a_segment_that_cannot_be_opened_loses_nothing(tmp_path: Path) -> None:
    fault = tmp_path / "read-only"
    s = _open(tmp_path / "spool", segment_bytes=1 << 10)
    s.fault_file = fault
    first = s.append(encode_record("t", b"k", b"x" * 300) for _ in range(3))
    assert len(first) == 3
    fault.write_text("EACCES")
    written = s.append(encode_record("t", b"k", b"y" * 300) for _ in range(10))  # rolls mid-way
    assert s.write_error is not None
    assert s.write_error.errno == errno.EACCES
    fault.unlink()
    rest = s.append(encode_record("t", b"k", b"y" * 300) for _ in range(10 - len(written)))
    assert len(written) + len(rest) == 10
    assert [v for _, _, v in _read_all(s)] == [b"x" * 300] * 3 + [b"y" * 300] * 10
    s.close()


def test_check_spool_root_names_the_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SpoolError, match=re.escape(str(blocker / "spool"))):
        check_spool_root(blocker / "spool")  # a real ENOTDIR: cannot be created
    check_spool_root(tmp_path / "fine" / "spool")
    assert list((tmp_path / "fine" / "spool").iterdir()) == []  # the probe is gone


def _as_another_user(work: Callable[[], dict[str, object]]) -> dict[str, object]:
    """``work()`` in a forked child running as nobody (root may write anywhere, whatever the
    mode bits say), else here; its result as JSON through a pipe."""
    if os.geteuid() != 0:
        return work()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec, so no interpreter to find under /root
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(write_end, json.dumps(work()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return dict(json.loads(data))


def test_a_folder_the_process_may_not_write_is_refused_with_its_name() -> None:
    """A real EACCES from the kernel: folders the process may not write (chmod)."""
    base = Path(tempfile.mkdtemp(prefix="fl-perm-"))
    root = base / "spool"
    root.mkdir()
    (root / "slot-0").mkdir()
    # Others may pass through but not write: the point of the test.
    os.chmod(base, 0o711)  # noqa: S103
    os.chmod(root, 0o511)  # noqa: S103
    os.chmod(root / "slot-0", 0o511)  # noqa: S103

    def work() -> dict[str, object]:
        out: dict[str, object] = {}
        try:
            check_spool_root(root)
        except SpoolError as exc:
            out["check"] = str(exc)
        try:
            Spool(root / "slot-0", max_bytes=1 << 20, segment_bytes=1 << 10, fsync_interval_s=0)
        except OSError as exc:
            out["open"] = exc.errno
        return out

    try:
        out = _as_another_user(work)
    finally:
        for path in (base, root, root / "slot-0"):
            os.chmod(path, 0o700)
        shutil.rmtree(base, ignore_errors=True)
    assert str(root) in str(out["check"])
    assert "Permission denied" in str(out["check"])
    assert out["open"] == errno.EACCES
