"""Throw-away certificates for TLS tests: a CA, a server certificate for 127.0.0.1 and localhost, and
a client certificate with an encrypted key, made with the ``openssl`` command line; and a TLS server
on a loopback port that records what clients send it.

Real TLS, real verification: the tests see a handshake succeed or fail for the reasons a broker or a
ClickHouse server would give, without pretending to be either.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: The password of the client key :func:`make_certificates` writes.
CLIENT_KEY_PASSWORD = "client-key-pass-1234"


@dataclass(frozen=True)
class Certificates:
    """Paths of the PEM files of one throw-away PKI."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path  # encrypted with CLIENT_KEY_PASSWORD
    other_ca: Path  # a CA that signed none of them


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: Path) -> Certificates:
    """A CA, a server certificate (127.0.0.1, localhost) and a client certificate signed by it, and an
    unrelated CA, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    days = ("-days", "2")
    for name in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
            "-subj", f"/CN=feedbackloop test {name}", *days, cwd=folder,
        )  # fmt: skip
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=localhost", cwd=folder)  # fmt: skip
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-extfile", "server.ext", *days, cwd=folder)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-passout", f"pass:{CLIENT_KEY_PASSWORD}", "-keyout", "client.key",
             "-out", "client.csr", "-subj", "/CN=feedbackloop-client", cwd=folder)  # fmt: skip
    _openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "client.pem", *days, cwd=folder)  # fmt: skip
    return Certificates(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        other_ca=folder / "other-ca.pem",
    )


@dataclass
class TlsServer:
    """A TLS listener on 127.0.0.1 that completes handshakes, reads what a client sends first, and
    answers an HTTP 404 (so an HTTP client sees an answer that is not ClickHouse's)."""

    certs: Certificates
    require_client_cert: bool = False
    port: int = 0
    received: list[bytes] = field(default_factory=list)
    client_subjects: list[str] = field(default_factory=list)
    handshake_errors: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def running(self) -> Iterator[TlsServer]:
        """Serve in a thread until the block ends."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certs.server_cert, self.certs.server_key)
        if self.require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.certs.ca)
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.2)
        self.port = listener.getsockname()[1]
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                try:
                    raw, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                raw.settimeout(5)
                try:
                    with context.wrap_socket(raw, server_side=True) as conn:
                        peer = conn.getpeercert()
                        if peer:
                            self.client_subjects.append(str(peer.get("subject")))
                        self.received.append(_read_request(conn))
                        conn.sendall(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                except (ssl.SSLError, OSError) as exc:
                    self.handshake_errors.append(str(exc))
                finally:
                    raw.close()

        thread = threading.Thread(target=serve, name="tls-server", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            listener.close()
            thread.join(5)


def _read_request(conn: ssl.SSLSocket) -> bytes:
    """What the client sends first: an HTTP request whole (headers and body), else one read."""
    data = conn.recv(65536)
    if not data.startswith((b"POST ", b"GET ")):
        return data
    while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length and (chunk := conn.recv(65536)):
        body += chunk
    return head + b"\r\n\r\n" + body
