"""The sender process's lifecycle, seen from the app: start, close, crashes, SIGKILL of the app,
a stuck sender, fork, flush and metrics across the process boundary.

No broker: the SDK points at a closed port, so every event ends in the spool, where the tests
read it back.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.settings import KafkaSettings, ProducerSettings
from producers import BufferFullError, ClientClosedError, FeedbackClient
from tests.unit.test_producer_sdk import _interaction, closed_port, spooled_values, wait_for


def exited(pid: int) -> bool:
    """Whether process ``pid`` has ended (gone, or a zombie its new parent has not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def sender_pid(client: FeedbackClient) -> int:
    client.spool_dir  # noqa: B018 - waits until the sender process has opened its spool
    pid = client.sender_pid
    assert pid is not None
    return pid


def seqs(directory: Path) -> list[int]:
    return [int(v["metadata"]["seq"]) for v in spooled_values(directory)]  # type: ignore[index]


@pytest.fixture
def dead_kafka() -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}", topic_namespace="unit")


@pytest.fixture
def settings(tmp_path: Path) -> ProducerSettings:
    return ProducerSettings(spool_dir=tmp_path / "spool", close_timeout_s=0.2, spool_fsync_interval_s=0.0)


@pytest.fixture
def client(dead_kafka: KafkaSettings, settings: ProducerSettings) -> Iterator[FeedbackClient]:
    with FeedbackClient(dead_kafka, settings) as c:
        yield c


def test_the_constructor_does_not_wait_for_the_sender_process(
    dead_kafka: KafkaSettings, settings: ProducerSettings
) -> None:
    started = time.perf_counter()
    client = FeedbackClient(dead_kafka, settings)
    for i in range(100):  # recorded before the sender process is ready: they wait in the buffer
        _interaction(client, metadata={"seq": str(i)})
    assert time.perf_counter() - started < 1.0
    client.close()
    assert seqs(client.spool_dir) == list(range(100))


def test_close_returns_once_the_sender_process_has_exited(client: FeedbackClient) -> None:
    _interaction(client, metadata={"seq": "0"})
    pid = sender_pid(client)
    client.close()
    assert exited(pid)
    assert client.sender_pid is None
    metrics = client.metrics()
    assert (metrics["spooled"], metrics["buffered"], metrics["unwritten"]) == (1, 0, 0)


def test_clients_leave_no_sender_process_behind(dead_kafka: KafkaSettings, tmp_path: Path) -> None:
    pids = []
    for n in range(4):
        settings = ProducerSettings(spool_dir=tmp_path / f"spool{n}", close_timeout_s=0.1)
        with FeedbackClient(dead_kafka, settings) as client:
            _interaction(client)
            pids.append(sender_pid(client))
    assert all(exited(pid) for pid in pids)
    # Dropped without close(): it closes itself (without blocking the code that dropped it).
    forgotten = FeedbackClient(
        dead_kafka, ProducerSettings(spool_dir=tmp_path / "forgotten", close_timeout_s=0.1)
    )
    _interaction(forgotten, metadata={"seq": "0"})
    pid = sender_pid(forgotten)
    del forgotten
    gc.collect()
    wait_for(lambda: exited(pid), timeout_s=15)
    assert seqs(tmp_path / "forgotten" / "slot-0") == [0]


APP = """
import sys, time
from pathlib import Path
from infra.settings import KafkaSettings, ProducerSettings
from producers import FeedbackClient

port, spool_dir, count = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
client = FeedbackClient(
    KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", topic_namespace="unit"),
    ProducerSettings(spool_dir=spool_dir, close_timeout_s=0.5),
)
client.spool_dir
print(client.sender_pid, flush=True)
sys.stdin.readline()
for seq in range(count):
    client.record_interaction(
        user_id="u", session_id="s", prompt="p", response="r" * 200, prompt_version="v1",
        model="m", response_time_ms=1, metadata={"seq": str(seq)},
    )
deadline = time.monotonic() + 60
while client.metrics()["unwritten"] and time.monotonic() < deadline:
    time.sleep(0.01)
print(client.metrics()["unwritten"], flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize(
    ("count", "sender_stopped"),
    [(3000, False), (80, True)],  # 80 events fit a pipe of the default 64 KiB
    ids=["sender-running", "sender-stopped-everything-in-the-pipe"],
)
def test_when_the_app_is_killed_the_sender_delivers_all_it_was_written(
    tmp_path: Path, count: int, sender_stopped: bool
) -> None:
    """SIGKILL the app: the sender process reads its pipe to the end, spools all, exits."""
    spool_root = tmp_path / "spool"
    app = subprocess.Popen(
        [sys.executable, "-c", APP, str(closed_port()), str(spool_root), str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert app.stdin is not None
    assert app.stdout is not None
    pid = int(app.stdout.readline())
    try:
        if sender_stopped:
            os.kill(pid, signal.SIGSTOP)  # what the app writes now stays in the pipe
        app.stdin.write("go\n")
        app.stdin.flush()
        assert app.stdout.readline().strip() == "0", "the app could not write everything to the pipe"
        os.kill(app.pid, signal.SIGKILL)
        app.wait(30)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait(30)
        if sender_stopped:
            os.kill(pid, signal.SIGCONT)
    wait_for(lambda: exited(pid), timeout_s=60)
    assert seqs(spool_root / "slot-0") == list(range(count))


def test_a_stuck_sender_process_fills_the_buffer_then_catches_up(
    dead_kafka: KafkaSettings, tmp_path: Path
) -> None:
    settings = ProducerSettings(spool_dir=tmp_path / "spool", buffer_max_events=200, close_timeout_s=0.2)
    with FeedbackClient(dead_kafka, settings) as client:
        pid = sender_pid(client)
        os.kill(pid, signal.SIGSTOP)
        try:
            for seq in range(200):  # this process's buffer, the pipe and the sender's, together
                _interaction(client, metadata={"seq": str(seq)})
            with pytest.raises(BufferFullError, match="200 of 200"):
                _interaction(client, metadata={"seq": "refused"})
            assert client.metrics()["buffered"] == 200
            assert not client.accepting
            started = time.perf_counter()
            with pytest.raises(BufferFullError):
                _interaction(client)
            assert time.perf_counter() - started < 0.05  # refused at once, never waits
            assert client.metrics()["rejected"] == 2
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_for(lambda: client.metrics()["buffered"] == 0)
        assert client.accepting
        _interaction(client, metadata={"seq": "200"})
    assert seqs(client.spool_dir) == list(range(201))


def test_close_gives_up_on_a_sender_process_that_never_reads(
    dead_kafka: KafkaSettings,
    settings: ProducerSettings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = FeedbackClient(dead_kafka, settings)
    monkeypatch.setattr(client._link, "exit_grace_s", 1.0)
    pid = sender_pid(client)
    os.kill(pid, signal.SIGSTOP)
    try:
        for _ in range(50):
            _interaction(client)
        started = time.monotonic()
        client.close(0.2)
        assert time.monotonic() - started < 15
        assert exited(pid)
        assert "did not exit in time" in caplog.text
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def test_a_sender_process_that_dies_is_replaced(
    client: FeedbackClient, caplog: pytest.LogCaptureFixture
) -> None:
    for seq in range(50):
        _interaction(client, metadata={"seq": str(seq)})
    wait_for(lambda: client.metrics()["spooled"] == 50)
    first = sender_pid(client)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: client.sender_pid not in (None, first))
    assert "killed by SIGKILL" in caplog.text
    for seq in range(50, 100):
        _interaction(client, metadata={"seq": str(seq)})
    client.close()
    metrics = client.metrics()
    assert metrics["spooled"] == 100  # counters add up over both processes
    assert metrics["dropped"] == 0  # the first had spooled everything it was given
    # The new process took over the spool slot, with what the first one left in it.
    assert seqs(client.spool_dir) == list(range(100))


def test_sigterm_does_not_stop_the_sender_while_the_app_runs(
    client: FeedbackClient, caplog: pytest.LogCaptureFixture
) -> None:
    pid = sender_pid(client)
    with caplog.at_level(logging.WARNING):
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: "SIGTERM ignored" in caplog.text)
    _interaction(client, metadata={"seq": "0"})
    assert not exited(pid)
    client.close()
    assert seqs(client.spool_dir) == [0]


def test_flush_across_the_process_boundary(client: FeedbackClient) -> None:
    started = time.monotonic()
    assert client.flush(10) is True  # nothing to acknowledge
    assert time.monotonic() - started < 5
    _interaction(client)
    started = time.monotonic()
    assert client.flush(0.3) is False  # no broker: never acknowledged
    assert 0.3 <= time.monotonic() - started < 2
    client.close()
    assert client.flush(1) is False  # closed


def test_metrics_come_from_the_sender_process(client: FeedbackClient) -> None:
    assert client.metrics()["spooled"] == 0
    for seq in range(30):
        _interaction(client, metadata={"seq": str(seq)})
    wait_for(lambda: client.metrics()["spooled"] == 30)
    metrics = client.metrics()
    assert metrics["spooling"] == 1
    assert metrics["spool_bytes"] >= metrics["spool_pending_bytes"] > 0
    assert (metrics["buffered"], metrics["unwritten"], metrics["sent"]) == (0, 0, 0)
    assert client.mode.value == "spool"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_client_inherited_through_fork_refuses_events(client: FeedbackClient) -> None:
    sender_pid(client)
    pid = os.fork()
    if pid == 0:  # the forked copy of this test process
        code = 3
        try:
            _interaction(client)
            code = 1
        except ClientClosedError:
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    _interaction(client, metadata={"seq": "0"})  # the parent's client is unaffected
    client.close()
    assert seqs(client.spool_dir) == [0]
