"""The app's side of the sender process: a pending list, one writer thread, the child's lifecycle.

A ``record_*`` call ends in :meth:`SenderProcess.put`: one append to a list under a lock. The
writer thread swaps the list out and hands it to ``os.writev`` (up to ``IOV_MAX`` frames per
system call, with the GIL released while the kernel copies), so the app's process does no
per-event Python work besides validating and serializing on the caller's thread. Everything
else — librdkafka, the spool, the replay — runs in the sender process
(:mod:`producers.sender.main`), on its own interpreter and GIL.

The sender process is started here, by the writer thread: ``PR_SET_PDEATHSIG`` fires when the
thread that started a process ends, and the writer lives exactly as long as its sender process.
If that process dies (a bug, the OOM killer), the writer counts what went down with it as
``dropped``, logs it and starts another, which takes over the spool slot and its backlog.

**Nothing is accepted that could not be kept.** :meth:`SenderProcess.put` reserves the frame's
bytes against the spool's bound before it takes it: what the spool holds, plus every frame
accepted and not yet settled (acknowledged, failed for good, or written to the spool), must fit
``spool_max_bytes``, since if the broker failed now all of them would go to the spool. The
sender process publishes its side of that sum in one shared-memory slot (``Slot.RELEASED``), so
the check is two reads of shared memory and an addition, under the lock ``put`` takes anyway.
It also refuses while the sender process reports a spool that cannot be written (``Slot.FAULT``)
or keeps dying before it is ready.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import math
import mmap
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Final

import producers
from infra.kafka import client_config
from infra.process import die_with_parent
from infra.settings import KafkaSettings, ProducerSettings
from producers.errors import BufferFullError, ClientClosedError, NotAcceptingError
from producers.sender.ipc import (
    COUNTER_SLOTS,
    STATUS_BYTES,
    Slot,
    State,
    StatusBlock,
    control_frame,
    is_control,
    split_messages,
)
from producers.sender.loop import Mode, SenderConfig
from producers.sender.spool import SEGMENT_START

log = logging.getLogger("producers.sdk")

_PIPE_BYTES: Final = 1 << 20  # the Linux default cap for unprivileged processes
_IOV_MAX: Final = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)
# After a write, let what callers record meanwhile gather: fewer, larger writes mean fewer GIL
# hand-offs (a CPU-bound caller gives the GIL up only every sys.getswitchinterval(), 5 ms).
_WRITER_LINGER_S: Final = 0.005
_IDLE_WAIT_S: Final = 1.0
_RELEASED: Final = int(Slot.RELEASED)
_FAULT: Final = int(Slot.FAULT)


def sender_config(kafka: KafkaSettings, producer: ProducerSettings) -> SenderConfig:
    """The sender's configuration for these settings (its spool path made absolute: the app may
    change directory before a sender process is restarted)."""
    return SenderConfig(
        kafka_config=client_config(kafka),
        spool_dir=str(producer.spool_dir.absolute()),
        client_id=producer.client_id,
        max_in_flight=producer.max_in_flight,
        spool_after_s=producer.spool_after_s,
        linger_ms=producer.linger_ms,
        sender_linger_ms=producer.sender_linger_ms,
        compression=producer.compression,
        close_timeout_s=producer.close_timeout_s,
        spool_max_bytes=producer.spool_max_bytes,
        spool_segment_bytes=producer.spool_segment_bytes,
        spool_fsync_interval_s=producer.spool_fsync_interval_s,
        max_message_bytes=producer.max_message_bytes,
        log_level=logging.getLogger("producers").getEffectiveLevel(),
        parent_pid=os.getpid(),
    )


class _Child:
    """One sender process and this process's ends of its pipes."""

    def __init__(
        self, proc: subprocess.Popen[bytes], data_fd: int, message_fd: int, status: StatusBlock
    ) -> None:
        self.proc = proc
        self.data_fd = data_fd
        self.message_fd = message_fd
        self.status = status
        self.spool_dir: Path | None = None
        self.ready = threading.Event()  # the spool is open
        self.gone = threading.Event()  # its message pipe ended: it exited
        self.reader: threading.Thread | None = None

    def close_pipe(self) -> None:
        """Close this end of the data pipe (once: the number may be reused right after)."""
        fd, self.data_fd = self.data_fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


# Links whose writer thread runs, held strongly: a client may be garbage-collected, what it
# accepted is still delivered (and waited for at interpreter exit).
_running: set[SenderProcess] = set()
_running_lock = threading.Lock()


class SenderProcess:
    """Frames from any thread to a sender process; its status; start, restart and close.

    :meth:`put` and :meth:`put_many` are the hot path. Buffered frames (the pending list, the
    pipe and the sender's own buffer, ``buffered`` in :meth:`metrics`) are bounded by
    ``max_buffered``; beyond it :class:`BufferFullError`. Record frames must also fit the spool
    budget (see the module docstring); beyond it, or while the spool fails,
    :class:`NotAcceptingError`.
    """

    #: After ``close(timeout_s)``, how much longer the sender process may take (start-up, spool
    #: writes) before it is killed.
    exit_grace_s: ClassVar[float] = 30.0
    #: Wait before restarting a sender process that died before it was ready, doubling up to the max.
    restart_backoff_s: ClassVar[tuple[float, float]] = (0.5, 30.0)

    def __init__(self, config: SenderConfig, max_buffered: int) -> None:
        self.config = config
        self._max = max_buffered
        self._lock = threading.Lock()
        # Under _lock:
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._taken = 0  # frames taken from _pending for the current sender process
        self._status = StatusBlock()  # the current sender process's (zeros before the first)
        self._slots = self._status.slots  # the same, for the hot path
        # Bytes of record frames accepted for the current sender process (see the module docstring).
        self._claimed = 0
        # The spool's bound less the segment headers it may need on the way.
        self.budget = config.spool_max_bytes - SEGMENT_START * (
            config.spool_max_bytes // config.spool_segment_bytes + 2
        )
        self._consumed = 0  # its count of consumed frames, as last read (it only grows)
        self._restarts = 0  # sender processes that ended before close
        self._idle = False  # the writer waits for _wake
        self._closing = False
        self._close_reason = "this FeedbackClient is closed"
        self._close_deadline = math.inf
        self._flush_id = 0
        self._base = dict.fromkeys(COUNTER_SLOTS, 0)  # counters of sender processes gone
        self.lost = 0  # frames that went down with a sender process (counted as dropped)
        self.rejected = 0  # BufferFullError
        self.refused = 0  # NotAcceptingError
        self._deferred_close: float | None = None  # close(timeout) asked for where no lock may be taken
        # Writer-thread state.
        self._carry: list[bytes] = []  # taken, not yet (wholly) written: survives a restart
        self._carry_bytes = 0  # 0: unknown
        self._carry_last = False  # the carry ends with the close frame
        self._child: _Child | None = None
        self._failed_starts = 0
        self._spool_dir: Path | None = None
        self._wake = threading.Event()
        self._urgent = False  # a flush waits: skip the linger
        self._closing_event = threading.Event()
        self._forked = False
        self._thread = threading.Thread(target=self._run, name="feedbackloop-writer", daemon=True)
        with _running_lock:
            _running.add(self)
        self._thread.start()

    # -- the hot path (any thread) -----------------------------------------------------------------

    def put(self, frame: bytes) -> None:
        """Accept one record frame, or raise :class:`BufferFullError`, :class:`NotAcceptingError`
        or :class:`ClientClosedError` (then nothing of it is kept)."""
        size = len(frame)
        with self._lock:
            if self._closing:
                raise ClientClosedError(self._close_reason)
            slots = self._slots
            if slots[_FAULT] or self._failed_starts or self._claimed + size - slots[_RELEASED] > self.budget:
                self._refuse(1, size)
            pending = self._pending
            # _consumed may be stale, never too high: read the shared memory only when near full.
            if len(pending) + self._taken - self._consumed >= self._max and self._full(1):
                self._reject(1)
            pending.append(frame)
            self._pending_bytes += size
            self._claimed += size
            idle, self._idle = self._idle, False
        if idle:
            self._wake.set()

    def put_many(self, frames: Sequence[bytes]) -> None:
        """Accept all of the record ``frames`` or none."""
        size = sum(map(len, frames))
        with self._lock:
            if self._closing:
                raise ClientClosedError(self._close_reason)
            slots = self._slots
            if slots[_FAULT] or self._failed_starts or self._claimed + size - slots[_RELEASED] > self.budget:
                self._refuse(len(frames), size)
            if self._full(len(frames)):
                self._reject(len(frames))
            self._pending.extend(frames)
            self._pending_bytes += size
            self._claimed += size
            idle, self._idle = self._idle, False
        if idle:
            self._wake.set()

    def _refuse(self, count: int, size: int) -> None:
        self.refused += count  # under _lock
        raise NotAcceptingError(self._not_accepting_reason(size))

    def _not_accepting_reason(self, size: int = 0) -> str:
        """Why a frame of ``size`` bytes would be refused now ("" if it would not)."""
        where = self._spool_dir or self.config.spool_dir
        if fault := self._slots[_FAULT]:
            return (
                f"the spool under {where} cannot be written ({os.strerror(fault)}); events are "
                "refused until a write succeeds again"
            )
        if self._failed_starts:
            return "the sender process keeps exiting before it is ready (see the log); it is being restarted"
        reserved = self._claimed - self._slots[_RELEASED]
        if reserved + size > self.budget:
            return (
                f"the spool under {where} could not keep it if the broker failed now: {reserved} of "
                f"{self.budget} bytes are spooled or on their way (producer.spool_max_bytes); "
                f"this {size}-byte event does not fit"
            )
        return ""

    def _use_status(self, status: StatusBlock) -> None:
        """Follow a new sender process's status block (under _lock)."""
        self._status = status
        self._slots = status.slots
        self._consumed = 0

    def _full(self, count: int) -> bool:
        self._consumed = self._status.consumed()  # under _lock
        return len(self._pending) + self._taken - self._consumed + count > self._max

    def _append_control(self, message: dict[str, Any]) -> None:
        frame = control_frame(message)  # under _lock
        self._pending.append(frame)
        self._pending_bytes += len(frame)
        self._idle = False

    def _reject(self, count: int) -> None:
        self.rejected += count  # under _lock
        buffered = len(self._pending) + self._taken - self._consumed
        raise BufferFullError(
            f"the producer buffer holds {buffered} of {self._max} events; {count} more refused "
            "(raise producer.buffer_max_events, or the broker/disk is too slow)"
        )

    # -- state ---------------------------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` was called (no frame is accepted any more)."""
        return self._closing

    @property
    def mode(self) -> Mode:
        """Where the sender process sends new events."""
        return Mode.SPOOL if self._status[Slot.SPOOLING] else Mode.DIRECT

    @property
    def buffered(self) -> int:
        """Frames accepted and not yet handed to librdkafka or the spool."""
        with self._lock:
            return len(self._pending) + max(0, self._taken - self._status.consumed())

    @property
    def unwritten(self) -> int:
        """Frames still in this process, not yet written to the pipe: what a SIGKILL would lose."""
        return len(self._pending) + len(self._carry)

    @property
    def healthy(self) -> bool:
        """False while the sender process is being restarted after it died before it was ready."""
        return self._failed_starts == 0

    @property
    def reserved_bytes(self) -> int:
        """Bytes held against the spool's bound: spooled, or accepted and not yet settled."""
        return self._claimed - self._slots[_RELEASED]

    @property
    def fault(self) -> int:
        """0, or the errno of why the sender process's spool takes no writes now."""
        return int(self._slots[_FAULT])

    def not_accepting_reason(self, size: int = 0) -> str:
        """Why a record of ``size`` bytes would be refused now; "" when it would be accepted
        (the buffer's bound aside)."""
        if self._closing:
            return self._close_reason
        return self._not_accepting_reason(size)

    @property
    def sender_pid(self) -> int | None:
        """The current sender process's id (None before it started or after it exited)."""
        child = self._child
        return child.proc.pid if child is not None and child.proc.returncode is None else None

    def spool_dir(self, timeout_s: float = 60.0) -> Path:
        """The spool slot of the sender process; waits (at most ``timeout_s``) until it is open."""
        deadline = time.monotonic() + timeout_s
        while True:
            child = self._child
            if child is not None and child.spool_dir is not None:
                return child.spool_dir
            if self._spool_dir is not None and not self._thread.is_alive():
                return self._spool_dir  # closed
            if time.monotonic() >= deadline:
                raise RuntimeError("the feedbackloop sender process has not opened its spool (see the log)")
            time.sleep(0.005)

    def metrics(self) -> dict[str, int]:
        """Counters over every sender process this client had, and the current gauges."""
        with self._lock:
            status, taken, pending = self._status, self._taken, len(self._pending)
            base, lost, rejected = dict(self._base), self.lost, self.rejected
            unwritten = pending + len(self._carry)
        values = status.snapshot()
        out = {name: base[name] + values[slot] for name, slot in COUNTER_SLOTS.items()}
        out["dropped"] += lost
        out.update(
            rejected=rejected,
            refused=self.refused,
            reserved_bytes=self.reserved_bytes,
            spool_fault=values[Slot.FAULT],
            buffered=pending + max(0, taken - values[Slot.RECORDS] - values[Slot.CONTROLS]),
            unwritten=unwritten,
            in_flight=values[Slot.IN_FLIGHT],
            spool_bytes=values[Slot.SPOOL_BYTES],
            spool_pending_bytes=values[Slot.SPOOL_PENDING_BYTES],
            spooling=values[Slot.SPOOLING],
        )
        return out

    # -- flush and close -------------------------------------------------------------------------

    def flush(self, timeout_s: float) -> bool:
        """Wait until the sender process reports every frame accepted before the call acknowledged."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            if self._closing:
                return False
            self._flush_id += 1
            flush_id, restarts = self._flush_id, self._restarts
            # A flush frame is not an event: it goes in whatever the buffer bound says.
            self._append_control({"op": "flush", "id": flush_id})
        self._urgent = True
        self._wake.set()
        try:
            while self._restarts == restarts:  # a sender process that died may have taken events
                if self._status[Slot.FLUSHED] >= flush_id:
                    return True
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.002)
            return False
        finally:
            self._urgent = False

    def close_soon(self, timeout_s: float) -> None:
        """:meth:`close` without waiting, and without taking any lock (safe in ``__del__``, which
        the garbage collector may run in any thread, even one holding this object's locks): the
        writer thread closes within a second."""
        self._deferred_close = timeout_s

    def close(self, timeout_s: float, *, wait: bool = True) -> None:
        """Send ``close``: the sender delivers within ``timeout_s``, spools the rest and exits.

        With ``wait`` (the default), returns once it has exited; it is killed if it takes more
        than ``timeout_s + exit_grace_s``.
        """
        with self._lock:
            if self._forked:
                return
            if not self._closing:
                self._closing = True
                self._close_deadline = time.monotonic() + timeout_s + self.exit_grace_s
                self._append_control({"op": "close", "timeout_s": timeout_s})
        self._closing_event.set()
        self._wake.set()
        if not wait or threading.current_thread() is self._thread:
            return
        self._thread.join(max(0.0, self._close_deadline - time.monotonic()) + 1.0)
        if self._thread.is_alive():
            # The writer is stuck writing to a sender process that does not read: kill that
            # process, and the write fails.
            child = self._child
            if child is not None:
                with contextlib.suppress(OSError):
                    child.proc.kill()
            self._thread.join(10.0)

    # -- the writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                try:
                    self._serve()
                    return
                except Exception:
                    log.exception("feedbackloop writer thread: unexpected error; carrying on")
                    if self._closing and time.monotonic() >= self._close_deadline:
                        return
                    time.sleep(0.1)
        finally:
            child = self._child
            if child is not None and child.proc.returncode is None:
                child.close_pipe()  # end of file: it delivers or spools what it read, then exits
            with _running_lock:
                _running.discard(self)

    def _serve(self) -> None:
        while True:
            child = self._child
            if child is None or child.gone.is_set():
                if child is not None:
                    self._retire(child)
                if self._closing and time.monotonic() >= self._close_deadline:
                    self._give_up()
                    return
                child = self._start()
                if child is None:
                    continue
            if not self._carry:
                self._take()
                if not self._carry:
                    continue
            remaining = _write_all(child.data_fd, self._carry, self._carry_bytes)
            if remaining:
                # The sender process is gone (or going): wait for its message pipe to end.
                self._carry, self._carry_bytes = remaining, 0
                child.gone.wait(5.0)
                child.gone.set()
                continue
            self._carry, self._carry_bytes = [], 0
            if self._carry_last:
                self._await_exit(child)
                return
            if not self._urgent and not self._closing:
                time.sleep(_WRITER_LINGER_S)

    def _take(self) -> None:
        """Wait for frames and move them to the carry (noting whether the close frame ends them)."""
        with self._lock:
            if not self._pending:
                self._idle = True
                self._wake.clear()
        if self._idle:
            self._wake.wait(_IDLE_WAIT_S)
        if self._deferred_close is not None and not self._closing:
            self.close(self._deferred_close, wait=False)
        with self._lock:
            self._consumed = self._status.consumed()
            frames = self._pending
            if frames:
                self._carry, self._carry_bytes = frames, self._pending_bytes
                self._carry_last = self._closing
                self._pending, self._pending_bytes = [], 0
                self._idle = False
                self._taken += len(frames)

    def _start(self) -> _Child | None:
        """Start a sender process (after a back-off if the last ones died early); None on failure."""
        if self._failed_starts:
            first, most = self.restart_backoff_s
            delay = min(most, first * 2 ** (self._failed_starts - 1))
            if self._closing:  # a last try or two before the deadline
                time.sleep(min(delay, 0.5, max(0.0, self._close_deadline - time.monotonic())))
            else:
                self._closing_event.wait(delay)
        try:
            child = self._spawn()
        except (OSError, subprocess.SubprocessError) as exc:
            self._failed_starts += 1
            log.error("feedbackloop: cannot start the sender process: %s", exc)
            return None
        with self._lock:
            self._child = child
            self._use_status(child.status)
            self._taken = len(self._carry)
            # What the new process will be handed: the carry, then the pending list.
            self._claimed = sum(len(f) for f in (*self._carry, *self._pending) if not is_control(f))
        return child

    def _spawn(self) -> _Child:
        data_read, data_write = os.pipe()
        message_read, message_write = os.pipe()
        status_fd = _shared_memory()
        started = False
        try:
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(data_write, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
            status = StatusBlock(mmap.mmap(status_fd, STATUS_BYTES))
            proc = subprocess.Popen(
                [sys.executable, "-m", "producers.sender.main", str(message_write), str(status_fd)],
                stdin=data_read,
                stdout=subprocess.DEVNULL,
                pass_fds=(message_write, status_fd),
                env=_child_environment(),
                # Its own session: a Ctrl-C in the terminal goes to the app, which closes it.
                start_new_session=True,
                preexec_fn=die_with_parent(os.getpid()),
            )
            child = _Child(proc, data_write, message_read, status)
            config = control_frame({"op": "config", "sender": self.config.to_dict()})
            if _write_all(data_write, [config], len(config)):
                raise OSError("the sender process exited at once")
            started = True
        finally:
            for fd in (data_read, message_write, status_fd):
                os.close(fd)
            if not started:
                os.close(data_write)
                os.close(message_read)
        child.reader = threading.Thread(
            target=self._read_messages, args=(child,), name="feedbackloop-sender-messages", daemon=True
        )
        child.reader.start()
        return child

    def _read_messages(self, child: _Child) -> None:
        """Log records and "ready" from the sender process, until it exits."""
        rest = b""
        try:
            while chunk := os.read(child.message_fd, 1 << 16):
                data = rest + chunk
                messages, used = split_messages(data)
                rest = data[used:]
                for message in messages:
                    self._on_message(child, message)
        except Exception:
            log.exception("feedbackloop: reading the sender process's messages failed")
        finally:
            os.close(child.message_fd)
            child.gone.set()
            self._wake.set()

    def _on_message(self, child: _Child, message: dict[str, Any]) -> None:
        if message.get("kind") == "ready":
            child.spool_dir = self._spool_dir = Path(message["spool_dir"])
            self._failed_starts = 0
            child.ready.set()
            log.info("feedbackloop sender process %d ready; spool %s", child.proc.pid, child.spool_dir)
        elif message.get("kind") == "log":
            logger = logging.getLogger(str(message["name"]))
            level = int(message["level"])
            if logger.isEnabledFor(level):
                record = logger.makeRecord(
                    logger.name, level, "(sender process)", 0, message["msg"], (), None
                )
                record.process = child.proc.pid
                record.processName = "feedbackloop-sender"
                logger.handle(record)

    def _retire(self, child: _Child) -> None:
        """Account for a sender process that exited before ``close``; close its pipe."""
        try:
            code = child.proc.wait(10.0)
        except subprocess.TimeoutExpired:
            child.proc.kill()
            code = child.proc.wait()
        if child.reader is not None:
            child.reader.join(5.0)
        child.close_pipe()
        values = child.status.snapshot()
        with self._lock:
            for name, slot in COUNTER_SLOTS.items():
                self._base[name] += values[slot]
            lost = max(0, self._taken - child.status.consumed() - len(self._carry))
            self.lost += lost
            self._use_status(StatusBlock())
            self._taken = len(self._carry)
            self._child = None
            self._restarts += 1
        if not child.ready.is_set():
            self._failed_starts += 1
        log.error(
            "feedbackloop sender process %d exited (%s); %d events it had not handed on are lost%s",
            child.proc.pid,
            _describe(code),
            lost,
            "" if self._closing else "; starting another",
        )

    def _await_exit(self, child: _Child) -> None:
        """After the close frame: wait for the sender process to deliver, spool and exit."""
        child.close_pipe()
        try:
            code = child.proc.wait(max(0.0, self._close_deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error(
                "feedbackloop sender process %d did not exit in time after close; killed (what it "
                "held in memory is lost; what it spooled is sent by the next client)",
                child.proc.pid,
            )
            child.proc.kill()
            code = child.proc.wait()
        if child.reader is not None:
            child.reader.join(5.0)
        with self._lock:
            lost = max(0, self._taken - child.status.consumed())
            if child.status[Slot.STATE] != State.CLOSED:
                self.lost += lost
        if child.status[Slot.STATE] != State.CLOSED:
            log.error(
                "feedbackloop sender process %d ended (%s) without finishing: up to %d events lost",
                child.proc.pid,
                _describe(code),
                lost,
            )

    def _give_up(self) -> None:
        """Closing, past the deadline, no sender process: what is left cannot be sent."""
        with self._lock:
            frames = self._carry + self._pending
            self._carry = []
            self._pending, self._pending_bytes = [], 0
            lost = sum(1 for frame in frames if not is_control(frame))
            self.lost += lost
            self._taken = 0
        if lost:
            log.error("feedbackloop: no sender process could be started; %d events lost at close", lost)

    # -- fork ----------------------------------------------------------------------------------------

    def _abandon_after_fork(self) -> None:
        """In a child made by fork(): let go of the parent's sender process."""
        self._lock = threading.Lock()  # may have been held by a thread that does not exist here
        self._forked = True
        self._closing = True
        self._close_reason = (
            f"this FeedbackClient belongs to process {self.config.parent_pid}; it was inherited "
            "through fork(): create a FeedbackClient in each process"
        )
        self._pending, self._pending_bytes = [], 0
        self._carry = []
        child = self._child
        if child is not None:
            # Holding the parent's pipe would keep its sender process from seeing the parent end.
            child.close_pipe()
            with contextlib.suppress(OSError):
                os.close(child.message_fd)


def _write_all(fd: int, frames: list[bytes], size: int = 0) -> list[bytes]:
    """Write ``frames`` (``size`` bytes in all, 0 if unknown) to the pipe.

    Returns [] once all are written, or the frames not wholly written when the pipe broke (the
    sender process is gone). With ``size`` known and at most ``IOV_MAX`` frames (the common
    case) this is one system call and no Python work per frame: the writer holds the GIL for
    microseconds, however many events it moves.
    """
    if size and len(frames) <= _IOV_MAX:
        try:
            written = os.writev(fd, frames)  # the GIL is released while the kernel copies
        except OSError:  # EPIPE
            return frames
        if written == size:
            return []
        done, offset = _advance(frames, 0, 0, written)
    else:
        done, offset = 0, 0
    total = len(frames)
    while done < total:
        chunk: list[bytes | memoryview] = list(frames[done : done + _IOV_MAX])
        if offset:
            chunk[0] = memoryview(frames[done])[offset:]
        try:
            written = os.writev(fd, chunk)
        except OSError:
            return frames[done:]
        done, offset = _advance(frames, done, offset, written)
    return []


def _advance(frames: list[bytes], done: int, offset: int, written: int) -> tuple[int, int]:
    """Where writing stands after ``written`` more bytes from frame ``done``, byte ``offset``."""
    while written > 0:
        left = len(frames[done]) - offset
        if written < left:
            return done, offset + written
        written -= left
        done, offset = done + 1, 0
    return done, offset


def _shared_memory() -> int:
    """A file descriptor of STATUS_BYTES zeroed bytes to share with the sender process."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("feedbackloop-sender-status", os.MFD_CLOEXEC)
    else:  # pragma: no cover - not Linux
        with tempfile.TemporaryFile() as file:
            fd = os.dup(file.fileno())
    os.ftruncate(fd, STATUS_BYTES)
    return fd


def _child_environment() -> dict[str, str]:
    """The app's environment, with the root of this package importable (the app may have found it
    through a sys.path entry added at run time, which the child would not have)."""
    env = dict(os.environ)
    root = str(Path(producers.__file__).resolve().parent.parent)
    paths = env.get("PYTHONPATH", "").split(os.pathsep) if env.get("PYTHONPATH") else []
    if root not in paths and Path(root).name not in ("site-packages", "dist-packages"):
        env["PYTHONPATH"] = os.pathsep.join([root, *paths])
    return env


def _describe(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


@atexit.register
def _close_running() -> None:
    """At interpreter exit, close the senders not closed yet (deliver in time, spool the rest)."""
    with _running_lock:
        links = list(_running)
    for link in links:
        with contextlib.suppress(Exception):
            link.close(link.config.close_timeout_s)


def _after_fork_in_child() -> None:
    global _running_lock
    _running_lock = threading.Lock()
    for link in list(_running):
        link._abandon_after_fork()
    _running.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
