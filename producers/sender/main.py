"""The sender process: ``python -m producers.sender.main MESSAGE_FD STATUS_FD``, started by a FeedbackClient.

It reads frames (:mod:`producers.sender.ipc`) from its stdin, the app's pipe, and hands the records to a
:class:`~producers.sender.Sender` (librdkafka, or the spool while the broker is unwell). Its
counters go to the shared-memory status block ``STATUS_FD``; its log records and the "ready"
message to the pipe ``MESSAGE_FD``.

It exits after

* a ``close`` frame: delivers what the broker takes within the frame's timeout, spools the rest;
* end of file without ``close`` (the app died, e.g. SIGKILL): the same, with ``close_timeout_s``
  from its configuration, for every frame it read — all the app had written to the pipe;
* the app process is gone while its pipe stays open elsewhere (a process that inherited it)
  and nothing more is readable: as at end of file.

If the spool cannot be opened (a folder it may not write, a read-only or full disk), it does not
exit: it raises ``Slot.FAULT`` (the app refuses new events meanwhile), leaves what the app sent
unread in the pipe and tries again, with a growing pause, until the spool opens (then it carries
on as usual, nothing lost) or the app closes its end of the pipe (then it exits: what the pipe
held is lost, and the app counts and logs it).

SIGTERM and SIGINT change nothing while the app lives: the app closes its sender (a Ctrl-C in a
terminal reaches the app, which does). Once the app is gone — the kernel sends SIGTERM then, as
asked with ``PR_SET_PDEATHSIG`` — the sender finishes as at end of file. SIGKILL loses what the
sender holds in memory.
"""

from __future__ import annotations

import collections
import errno
import itertools
import logging
import mmap
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any, Final

from producers.sender.ipc import (
    MAX_MESSAGE_BYTES,
    STATUS_BYTES,
    Slot,
    State,
    StatusBlock,
    encode_message,
    split_frames,
)
from producers.sender.loop import Sender, SenderConfig
from producers.sender.spool import SpoolError

log = logging.getLogger("producers.sdk")

_READ_BYTES: Final = 1 << 20
_POLL_MS: Final = 500  # how often to look whether the app is still there while the pipe is quiet
_MAX_LOG_CHARS: Final = 900  # UTF-8 takes up to 4 bytes a character: stays within one message


class _Messages:
    """Messages to the app. Never blocks: an app that does not read loses log lines, not time."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._lock = threading.Lock()
        self._broken = False

    def send(self, message: dict[str, Any]) -> bool:
        data = encode_message(message)
        with self._lock:
            if self._broken:
                return False
            try:
                os.write(self._fd, data)  # at most PIPE_BUF bytes: all or nothing
            except BlockingIOError:
                return False
            except OSError:
                self._broken = True  # the app is gone
                return False
        return True


class _ForwardLogs(logging.Handler):
    """Send log records to the app, which logs them with its own configuration; stderr otherwise."""

    def __init__(self, messages: _Messages) -> None:
        super().__init__()
        self._messages = messages
        self._fallback = logging.StreamHandler(sys.stderr)
        self._fallback.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            if len(text) > _MAX_LOG_CHARS:  # keep the start (what) and the end (where it failed)
                text = text[: _MAX_LOG_CHARS // 3] + " [...] " + text[-(_MAX_LOG_CHARS * 2 // 3) :]
            message = {"kind": "log", "name": record.name, "level": record.levelno, "msg": text}
            try:
                sent = self._messages.send(message)
            except ValueError:  # too long once encoded (control characters are escaped)
                sent = False
            if not sent:
                self._fallback.handle(record)
        except Exception:
            self.handleError(record)


class _PipeReader:
    """Frames from the app's pipe, in batches, until end of file (or the app is gone)."""

    def __init__(self, fd: int, parent_pid: int) -> None:
        self._fd = fd
        self.parent_pid = parent_pid
        self.signalled: int | None = None  # set by the signal handler, logged by the loop
        self._rest = b""
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)

    def app_gone(self) -> bool:
        """Whether the app process has exited (this process was handed to another parent)."""
        return os.getppid() != self.parent_pid

    def hung_up(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` without reading: True once the app closed its end of the pipe
        (or is gone), whatever the pipe still holds."""
        deadline = time.monotonic() + timeout_s
        while True:
            if any(revents & select.POLLHUP for _, revents in self._poll.poll(0)) or self.app_gone():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, 0.1))

    def batches(self) -> Iterator[list[bytes | dict[str, Any]]]:
        while True:
            ready = self._poll.poll(_POLL_MS)
            if self.signalled is not None:
                log.warning(
                    "feedbackloop sender: %s ignored while the app runs (the app closes its sender)",
                    signal.Signals(self.signalled).name,
                )
                self.signalled = None
            if not ready:
                if self.app_gone():
                    log.warning("feedbackloop sender: the app process is gone; finishing")
                    return
                continue
            chunk = os.read(self._fd, _READ_BYTES)
            if not chunk:
                if self._rest:
                    # The app died in the middle of a write: that frame never fully left it.
                    log.warning(
                        "feedbackloop sender: the app's pipe ended in a torn frame (%d bytes); skipped it",
                        len(self._rest),
                    )
                return
            data = self._rest + chunk if self._rest else chunk
            items, used = split_frames(data)
            self._rest = data[used:]
            if items:
                yield items


def _read_config(
    batches: Iterator[list[bytes | dict[str, Any]]],
) -> tuple[SenderConfig, list[bytes | dict[str, Any]]]:
    """The configuration (the first frame) and the frames read with it."""
    for items in batches:
        first = items[0]
        if not isinstance(first, dict) or first.get("op") != "config":
            raise RuntimeError("the app's pipe does not start with the sender's configuration")
        return SenderConfig.from_dict(first["sender"]), items[1:]
    raise RuntimeError("the app's pipe ended before the sender's configuration")


def _pump(
    batches: Iterator[list[bytes | dict[str, Any]]],
    sender: Sender,
    buffer: collections.deque[bytes],
    status: StatusBlock,
) -> float:
    """Move frames from the pipe to the sender until ``close`` or end of file; return the close timeout."""
    controls = 0
    for items in batches:
        records: list[bytes] = []
        for item in items:
            if isinstance(item, bytes):
                records.append(item)
                continue
            # A control frame applies after the records before it: hand those over first.
            buffer.extend(records)
            records = []
            controls += 1
            if item["op"] == "flush":
                sender.request_flush(int(item["id"]))
            elif item["op"] == "close":
                status[Slot.CONTROLS] = controls
                return float(item["timeout_s"])
            else:
                log.error("feedbackloop sender: unknown control frame %r ignored", item)
            status[Slot.CONTROLS] = controls
        buffer.extend(records)
        sender.notify()
    return sender.settings.close_timeout_s


def _open_sender(
    config: SenderConfig, buffer: collections.deque[bytes], status: StatusBlock, reader: _PipeReader
) -> Sender | None:
    """The sender, once its spool opens; None if the app closed the pipe first (see the module
    docstring). Exiting instead would lose what the app wrote to the pipe, at every restart."""
    pause_s = 0.5
    reported = ""
    while True:
        try:
            sender = Sender(config, buffer, status)
        except (SpoolError, OSError) as exc:
            status[Slot.FAULT] = (exc.errno if isinstance(exc, OSError) else None) or errno.EIO
            if str(exc) != reported:  # once per distinct reason, not once per try
                reported = str(exc)
                log.error(
                    "feedbackloop sender: cannot open the spool under %s: %s; new events are refused "
                    "until it opens (retrying)",
                    config.spool_dir,
                    exc,
                )
        else:
            if reported:
                log.warning("feedbackloop sender: the spool under %s is open now", config.spool_dir)
            return sender
        if reader.hung_up(pause_s):
            log.error(
                "feedbackloop sender: the app closed its pipe while the spool under %s could not be "
                "opened; the events it held are lost",
                config.spool_dir,
            )
            return None
        pause_s = min(pause_s * 2, 10.0)


def _on_signal(reader: _PipeReader) -> Any:
    def handler(signum: int, _frame: FrameType | None) -> None:
        # Once the app is gone, the reader finishes by itself (it looks every _POLL_MS). No
        # logging here: the handler may interrupt the main thread inside a log call.
        if not reader.app_gone():
            reader.signalled = signum

    return handler


def main(argv: list[str] | None = None) -> int:
    """Run the sender process; return its exit code."""
    args = sys.argv[1:] if argv is None else argv
    message_fd, status_fd = int(args[0]), int(args[1])
    messages = _Messages(message_fd)
    root = logging.getLogger()
    root.handlers[:] = [_ForwardLogs(messages)]
    root.setLevel(logging.WARNING)
    status = StatusBlock(mmap.mmap(status_fd, STATUS_BYTES))
    os.close(status_fd)
    status[Slot.PID] = os.getpid()
    reader = _PipeReader(sys.stdin.fileno(), os.getppid())
    handler = _on_signal(reader)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    batches = reader.batches()
    try:
        config, first = _read_config(batches)
    except Exception:
        log.exception("feedbackloop sender: cannot start")
        return 2
    root.setLevel(config.log_level)
    buffer: collections.deque[bytes] = collections.deque()
    sender = _open_sender(config, buffer, status, reader)
    if sender is None:
        return 2
    status[Slot.STATE] = State.RUNNING
    messages.send({"kind": "ready", "spool_dir": str(sender.spool_dir), "pid": os.getpid()})
    timeout_s = config.close_timeout_s
    code = 0
    try:
        timeout_s = _pump(itertools.chain([first], batches), sender, buffer, status)
    except Exception:
        log.exception("feedbackloop sender: reading the app's pipe failed; delivering what was read")
        code = 1
    started = time.monotonic()
    sender.close(timeout_s)
    status[Slot.STATE] = State.CLOSED
    log.debug("feedbackloop sender: closed in %.2fs", time.monotonic() - started)
    return code


assert MAX_MESSAGE_BYTES >= 4 * _MAX_LOG_CHARS + 200  # a log line fits one message

if __name__ == "__main__":
    sys.exit(main())
