"""Slow and idle clients against a real uvicorn on 127.0.0.1, configured as ``serve`` configures it.

Before (issue 12): 50 idle, header-trickle and body-trickle sockets stayed open for 20 s, each
holding a slot of the server. Now a request head must arrive within ``header_timeout_s``, a body
within ``body_timeout_s``, an idle kept-alive connection goes after ``keep_alive_timeout_s``, and
beyond ``max_connections`` requests get 503 at once. The SDK behind the collector points at a
closed port (events go to a spool of the test's own).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h11
import httpx
import pytest
import uvicorn

from infra.settings import CollectorSettings, KafkaSettings, ProducerSettings, Settings
from producers import FeedbackClient
from producers.collector import create_app, server_config
from producers.http_guard import HeaderDeadlineProtocol, header_deadline_protocol
from tests.unit.test_producer_sdk import closed_port

HEADER_S = 1.0
BODY_S = 1.0
KEEP_ALIVE_S = 1
#: Time allowed on top of a timeout for the server to act on it (a shared, loaded machine).
SLACK_S = 1.5


@dataclass
class Running:
    """A collector served by uvicorn in a thread of this process."""

    port: int
    server: uvicorn.Server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    started: list[tuple[Running, threading.Thread, FeedbackClient]] = []

    def run(**collector: object) -> Running:
        kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}", topic_namespace="unit")
        producer = ProducerSettings(spool_dir=tmp_path / f"spool-{len(started)}", close_timeout_s=0.2)
        options = {
            "header_timeout_s": HEADER_S,
            "body_timeout_s": BODY_S,
            "keep_alive_timeout_s": KEEP_ALIVE_S,
            "rate_limit_per_s": 0,
            **collector,
        }
        settings = Settings(
            kafka=kafka, producer=producer, collector=CollectorSettings.model_validate(options)
        )
        client = FeedbackClient(kafka, producer)
        port = _free_port()
        server = uvicorn.Server(
            server_config(settings, create_app(settings, client), host="127.0.0.1", port=port)
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "uvicorn exited at start"
            assert time.monotonic() < deadline, "uvicorn did not start in 30 s"
            time.sleep(0.02)
        running = Running(port, server)
        started.append((running, thread, client))
        return running

    yield run
    for running, thread, client in started:
        running.server.should_exit = True
        thread.join(30)
        client.close()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _until_closed(sock: socket.socket, trickle: bytes = b"", every_s: float = 0.1) -> tuple[bytes, float]:
    """Send ``trickle`` a byte at a time (every ``every_s``) until the server closes the socket;
    return what it answered and when it closed (monotonic)."""
    received = b""
    sock.settimeout(every_s)
    position = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if position < len(trickle):
            try:
                sock.sendall(trickle[position : position + 1])
            except OSError:  # reset: the server closed it
                return received, time.monotonic()
            position += 1
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return received, time.monotonic()
        if not chunk:
            return received, time.monotonic()
        received += chunk
    raise AssertionError(f"the server kept the socket open for 20 s; it sent {received!r}")


_HEAD = (
    b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"X-Padding: " + b"x" * 200 + b"\r\n"
)


def _body() -> bytes:
    event = {
        "type": "feedback",
        "interaction_id": str(uuid.uuid4()),
        "user_id": "u",
        "session_id": "s",
        "feedback_type": "accept",
    }
    return json.dumps(event).encode()


def test_an_idle_connection_gets_408_and_is_closed(start: Callable[..., Running]) -> None:
    running = start()
    with _connect(running.port) as sock:
        opened = time.monotonic()
        answer, closed = _until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert HEADER_S - 0.1 <= closed - opened <= HEADER_S + SLACK_S


def test_a_trickled_request_head_is_cut_off(start: Callable[..., Running]) -> None:
    running = start()
    with _connect(running.port) as sock:
        opened = time.monotonic()
        answer, closed = _until_closed(sock, _HEAD, every_s=0.05)  # 0.05 s a byte: 12 s for the head
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert closed - opened <= HEADER_S + SLACK_S


def test_a_trickled_body_gets_408_naming_the_setting(start: Callable[..., Running]) -> None:
    running = start()
    body = _body()
    with _connect(running.port) as sock:
        sock.sendall(_HEAD + b"Content-Length: %d\r\n\r\n" % len(body))
        sent_head = time.monotonic()
        answer, closed = _until_closed(sock, body, every_s=0.1)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"collector.body_timeout_s" in answer
    assert closed - sent_head <= BODY_S + SLACK_S


def test_an_idle_kept_alive_connection_is_closed(start: Callable[..., Running]) -> None:
    running = start()
    body = _body()
    with _connect(running.port) as sock:
        sock.sendall(_HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        answer, _closed = _until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 202 ")  # answered, kept alive, then closed when idle


def test_fifty_slow_clients_of_each_kind_are_all_cut_off_and_others_still_served(
    start: Callable[..., Running],
) -> None:
    """Before: 50 idle, header-trickle and body-trickle sockets each stayed open for 20 s."""
    running = start()
    body = _body()

    def idle() -> float:
        with _connect(running.port) as sock:
            opened = time.monotonic()
            return _until_closed(sock)[1] - opened

    def header_trickle() -> float:
        with _connect(running.port) as sock:
            opened = time.monotonic()
            return _until_closed(sock, _HEAD, every_s=0.2)[1] - opened

    def body_trickle() -> float:
        with _connect(running.port) as sock:
            sock.sendall(_HEAD + b"Content-Length: %d\r\n\r\n" % len(body))
            opened = time.monotonic()
            return _until_closed(sock, body, every_s=0.2)[1] - opened

    with ThreadPoolExecutor(150) as pool:
        futures = [pool.submit(kind) for kind in (idle, header_trickle, body_trickle) for _ in range(50)]
        time.sleep(0.3)
        served = httpx.post(f"{running.url}/v1/events", content=body, timeout=30)
        held = [future.result() for future in futures]
    assert served.status_code == 202, served.text
    # Typically cut within the timeout plus slack; 150 client threads on a loaded 2-core machine can
    # delay a few of them by seconds (a flake seen once), so the worst case only has to beat the 20 s
    # that every socket stayed open before.
    held.sort()
    assert held[len(held) // 2] <= max(HEADER_S, BODY_S) + SLACK_S, held[-5:]
    assert held[-1] <= 10.0, held[-5:]


def test_beyond_max_connections_requests_get_503_at_once(start: Callable[..., Running]) -> None:
    running = start(max_connections=5, header_timeout_s=10.0)
    sockets = [_connect(running.port) for _ in range(5)]
    try:
        time.sleep(0.2)
        refused = httpx.post(f"{running.url}/v1/events", content=_body(), timeout=10)
        assert refused.status_code == 503
    finally:
        for sock in sockets:
            sock.close()
    time.sleep(0.2)
    assert httpx.post(f"{running.url}/v1/events", content=_body(), timeout=10).status_code == 202


def test_the_uvicorn_internal_the_guard_relies_on_is_there() -> None:
    """HeaderDeadlineProtocol reads H11Protocol.conn (an h11.Connection). If a uvicorn upgrade
    moves it, this fails here, by name, rather than as a collector that stops timing out heads."""
    config = uvicorn.Config(app=create_app(Settings()), http=header_deadline_protocol(1.0))
    config.load()
    assert issubclass(config.http_protocol_class, HeaderDeadlineProtocol)

    async def build() -> HeaderDeadlineProtocol:
        from uvicorn.server import ServerState

        protocol_class = config.http_protocol_class
        assert issubclass(protocol_class, HeaderDeadlineProtocol)  # typed by uvicorn as asyncio.Protocol
        protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
        assert isinstance(protocol, HeaderDeadlineProtocol)
        return protocol

    protocol = asyncio.run(build())
    assert isinstance(protocol.conn, h11.Connection)
    assert protocol.conn.their_state is h11.IDLE
    assert protocol.header_timeout_s == 1.0
