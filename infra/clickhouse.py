"""One way to reach ClickHouse — embedded chdb or a server — through clickhouse-connect."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ProgrammingError

from infra.settings import ClickHouseSettings

_OWNER_FILE = ".feedbackloop-owner"


class ClickHouseBusyError(RuntimeError):
    """The chdb directory is held by another process (chdb allows one process per directory)."""


def chdb_path(url: str) -> Path | None:
    """The data directory of a chdb url, else None: ``chdb:///abs/dir`` or ``chdb://relative/dir``."""
    if not url.startswith("chdb://"):
        return None
    return Path(url.removeprefix("chdb://"))


def server_options(settings: ClickHouseSettings) -> dict[str, Any]:
    """clickhouse-connect's arguments for a server url: the interface named by the scheme (an
    ``https://`` url without the port 443 or 8443 would otherwise be spoken to in plain http), the
    password apart from the url, and with https the certificate verification, the CA and a client
    certificate."""
    scheme = urlsplit(settings.url).scheme
    options: dict[str, Any] = {"dsn": settings.url, "interface": scheme}
    if settings.password is not None:
        options["password"] = settings.password.get_secret_value()
    if scheme == "https":
        options["verify"] = settings.verify
        if settings.ca_cert is not None:
            options["ca_cert"] = str(settings.ca_cert.absolute())
        if settings.client_cert is not None:
            options["client_cert"] = str(settings.client_cert.absolute())
        if settings.client_cert_key is not None:
            options["client_cert_key"] = str(settings.client_cert_key.absolute())
    return options


def connect(settings: ClickHouseSettings, **server: Any) -> Client:
    """A clickhouse-connect client for the configured url (chdb or http(s)); ``server``: further
    arguments for a server (timeouts), ignored for chdb."""
    path = chdb_path(settings.url)
    if path is None:
        return clickhouse_connect.get_client(**server_options(settings), **server)
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    try:
        client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    except ProgrammingError as exc:
        raise ClickHouseBusyError(_busy_message(path)) from exc
    (path / _OWNER_FILE).write_text(str(os.getpid()))
    return client


def _busy_message(path: Path) -> str:
    owner = ""
    try:
        pid = int((path / _OWNER_FILE).read_text())
        os.kill(pid, 0)
        owner = f" by process {pid}"
    except (OSError, ValueError):
        pass
    return (
        f"the chdb directory {path} is in use{owner}: chdb allows one process per directory. "
        "Stop the feedbackloop worker (or whatever holds it) and try again, or point "
        "FEEDBACKLOOP_CLICKHOUSE__URL at a ClickHouse server (http://user:pass@host:8123)."
    )


def query_rows(
    client: Client, sql: str, parameters: dict[str, Any] | None = None
) -> tuple[list[str], list[Any]]:
    """Run ``sql``; return column names and rows."""
    result = client.query(sql, parameters=parameters)
    return list(result.column_names), [list(row) for row in result.result_rows]
