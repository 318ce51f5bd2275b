"""The outage drill: a switch, outside the process, that makes every write of the sink fail.

A file holding a UNIX time: until then each write raises the error the backend's own client raises
when the server refuses the connection, so the failure goes through the same classification, pause
and retry as a real outage. A file outside the process survives a restart of the worker, so a test
(or a fire drill) can kill the sink mid-outage and see its successor still facing it. Enabled only
by ``FEEDBACKLOOP_SINK__FAULT_FILE``; without that setting nothing is read.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def start_outage(path: Path, seconds: float, *, clock: Callable[[], float] = time.time) -> float:
    """Make writes fail for ``seconds`` from now (atomically: a reader sees the old or the new end);
    return the UNIX time the outage ends."""
    until = clock() + seconds
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(f"{until:.3f}\n")
    os.replace(scratch, path)
    return until


class OutageDrill:
    """Reads the drill file; :meth:`active` says whether writes should fail now."""

    def __init__(self, path: Path | None, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._complained = False

    def until(self) -> float | None:
        """The UNIX time the drill's outage ends, if a drill file is set and readable."""
        if self.path is None:
            return None
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return None
        try:
            return float(text)
        except ValueError:
            # A drill must never turn into lost rows or a crash: an unreadable file means no outage.
            if not self._complained:
                log.error("outage drill file %s does not hold a UNIX time (%r); ignoring it", self.path, text)
                self._complained = True
            return None

    def active(self) -> bool:
        """Whether a drill outage is on now."""
        until = self.until()
        return until is not None and self._clock() < until
