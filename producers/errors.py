"""The exceptions a FeedbackClient raises at the call site."""

from __future__ import annotations


class BufferFullError(RuntimeError):
    """The in-memory buffer is full: the sender cannot keep up. The event was not accepted."""


class ClientClosedError(RuntimeError):
    """The client was closed (or belongs to another process); it accepts no more events."""
