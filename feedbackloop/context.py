"""What every command starts from: the settings, and a ClickHouse client or a clear exit."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client
from pydantic import ValidationError

from feedbackloop.output import fail
from infra.clickhouse import ClickHouseBusyError, connect
from infra.settings import ClickHouseSettings, Settings


def load_settings(database: str | None = None) -> Settings:
    """The settings from the environment (and ``.env``); ``database`` replaces the configured one,
    validated like it (an identifier, never SQL). Invalid settings end the command with exit 2."""
    try:
        settings = Settings()
        if database:
            clickhouse = ClickHouseSettings.model_validate(
                {**settings.clickhouse.model_dump(), "database": database}
            )
            settings = settings.model_copy(update={"clickhouse": clickhouse})
    except ValidationError as exc:
        fail(f"invalid settings: {exc}", 2)
    return settings


def connect_or_exit(settings: Settings) -> Client:
    """A ClickHouse client for ``settings``; exit 2 with the reason when chdb is held by another process
    or the server does not answer (naming the url, never the password)."""
    try:
        return connect(settings.clickhouse)
    except ClickHouseBusyError as exc:
        fail(str(exc), 2)
    except Exception as exc:  # unreachable, refused credentials, TLS: the driver's own words, once
        reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        fail(f"ClickHouse at {settings.clickhouse.shown_url} did not answer: {reason}", 2)
