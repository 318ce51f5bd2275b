"""The exceptions a FeedbackClient raises at the call site.

Each means the event was **not** taken: nothing of it is kept, nothing is sent later. The app
decides what to do (retry later, tell its user, log it); the client counts each in its metrics.
"""

from __future__ import annotations


class BufferFullError(RuntimeError):
    """The in-memory buffer is full: the sender cannot keep up. The event was not accepted.

    Counted in the ``rejected`` metric; the collector answers 429.
    """


class NotAcceptingError(RuntimeError):
    """The client could not keep the event if the broker failed now, so it refuses it.

    The spool's bound is reached (by what is spooled plus what may still need spooling), a spool
    write failed (disk full, read-only, permissions) and none has succeeded since, or the sender
    process is not running. The message says which. Counted in the ``refused`` metric; the
    collector answers 503 with ``Retry-After``; ``FeedbackClient.accepting`` is False meanwhile.
    """


class EventTooLargeError(ValueError):
    """An event is larger than the pipeline takes: a field over its cap, or the whole message over
    the broker's size limit. Retrying cannot help; the event was not accepted.

    ``field`` names the field (None for the whole message), ``size`` and ``limit`` are in the
    unit the message gives (characters for a field, bytes for the message).
    """

    def __init__(self, message: str, *, field: str | None, size: int, limit: int) -> None:
        super().__init__(message)
        self.field = field
        self.size = size
        self.limit = limit


class EventTimeError(ValueError):
    """An event's ``created_at`` is further ahead of the wall clock than the pipeline accepts
    (``pipeline.max_future_skew_s``): a broken or forged clock. The event was not accepted; the
    collector answers 400 naming ``created_at``."""

    field = "created_at"


class ClientClosedError(RuntimeError):
    """The client was closed (or belongs to another process); it accepts no more events."""
