"""A deadline on a request's head for the collector's uvicorn: slow-header clients are cut off.

uvicorn times out idle kept-alive connections (``timeout_keep_alive``) but gives a connection
that has sent nothing, or sends its request line and headers a byte at a time, all the time it
likes: 50 such sockets stayed open for 20 s and each held a slot of ``limit_concurrency``. This
protocol is uvicorn's h11 protocol with a deadline: a connection must deliver a complete request
head within ``header_timeout_s`` of opening (or of the first byte of its next request, when kept
alive), else it gets ``408 Request Timeout`` and is closed. The body's deadline is the
collector's own (it reads the body itself).

It overrides no private method: it wraps the asyncio ``Protocol`` callbacks
(``connection_made``, ``data_received``, ``connection_lost``) and reads ``self.conn``, the
``h11.Connection`` uvicorn's ``H11Protocol`` keeps, through h11's public state API. That
attribute is the one internal it relies on; ``tests/unit/test_collector_transport.py`` fails
loudly if it moves.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Final

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

#: What a connection gets when its request head is late: then it is closed.
TIMEOUT_RESPONSE: Final = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: 29\r\n\r\nrequest head not sent in time"
)


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's line and headers."""

    header_timeout_s: ClassVar[float] = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            # Still waiting for (the rest of) a request head: the clock runs from its first byte.
            if self._head_deadline is None and not self.transport.is_closing():
                self._arm()
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._head_deadline = loop.call_later(self.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _expired(self) -> None:
        self._head_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.write(TIMEOUT_RESPONSE)
            self.transport.close()


def header_deadline_protocol(header_timeout_s: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class to give ``uvicorn.Config(http=...)`` for this deadline."""
    if header_timeout_s <= 0:
        raise ValueError("header_timeout_s must be > 0")
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout_s": header_timeout_s})


__all__ = ["TIMEOUT_RESPONSE", "HeaderDeadlineProtocol", "header_deadline_protocol"]
