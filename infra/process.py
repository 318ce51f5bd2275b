"""Helpers for the processes feedbackloop starts: children that do not outlive their parent."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import Final

_PR_SET_PDEATHSIG: Final = 1
_prctl: Callable[..., int] | None = None


def die_with_parent(parent_pid: int | None = None) -> Callable[[], None]:
    """A ``preexec_fn`` asking the kernel to SIGTERM the child when the thread that started it ends.

    If the parent dies without cleaning up (SIGKILL, the OOM killer), the child then shuts down
    gracefully instead of living on as an orphan (holding a chdb directory, a spool slot). The
    function runs between fork and exec, so it only calls prctl through a function pointer resolved
    beforehand (no import, no allocation of note). With ``parent_pid`` it also exits at once when
    the parent died before prctl took effect, since nobody would send the signal then.
    """
    global _prctl
    if _prctl is None and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            _prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl = _prctl
    sigterm = int(signal.SIGTERM)

    def preexec() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, sigterm)
        if parent_pid is not None and os.getppid() != parent_pid:
            os._exit(1)

    return preexec
