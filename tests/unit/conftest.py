"""Unit-test fixtures. chdb (ClickHouse in-process, no network) allows one data directory per
process, so every unit test that needs ClickHouse shares this session's directory and takes a
database of its own."""

from __future__ import annotations

import uuid

import pytest
from clickhouse_connect.driver.client import Client

from infra.clickhouse import connect
from infra.settings import ClickHouseSettings


@pytest.fixture(scope="session")
def chdb_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The url of the session's embedded ClickHouse (for commands run in this process)."""
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture(scope="session")
def chdb_client(chdb_url: str) -> Client:
    """The session's embedded ClickHouse."""
    return connect(ClickHouseSettings(url=chdb_url))


@pytest.fixture
def chdb_database(chdb_client: Client) -> str:
    """A fresh, empty database name in the session's chdb (migrate it if you need the tables)."""
    name = f"unit_{uuid.uuid4().hex[:8]}"
    chdb_client.command(f"CREATE DATABASE {name}")
    return name
