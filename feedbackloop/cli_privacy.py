"""``feedbackloop forget USER_ID...``: erase users -- recorded for good, their rows deleted.

Registered into ``feedbackloop.cli`` by one line there. What happens, and what stays in Kafka until
its retention passes: docs/security.md, "Retention and erasure".
"""

from __future__ import annotations

import getpass
from typing import Annotated

import typer
from confluent_kafka import KafkaException
from pydantic import ValidationError
from rich import box
from rich.table import Table

from feedbackloop.context import load_settings
from feedbackloop.output import console, err, fail
from infra.clickhouse import ClickHouseBusyError, connect
from infra.erasures import erasure_topic, request_erasure
from infra.kafka import KafkaUnavailableError
from infra.output_producer import OutputDeliveryError
from sinks.clickhouse.erasure import erase_users


def register(app: typer.Typer) -> None:
    """Add ``forget`` to the command line."""

    @app.command("forget")
    def forget_cmd(
        user_ids: Annotated[list[str], typer.Argument(help="The users, as the application identifies them.")],
        database: Annotated[str | None, typer.Option(help="Database (default: the configured one).")] = None,
        by: Annotated[
            str | None, typer.Option(help="Who asks, for the record (default: cli:<login>).")
        ] = None,
    ) -> None:
        """Erase users: record it on ai.erasures.v1 (the processors and sinks forget them and skip their
        events from then on, replays included) and delete their rows from every ClickHouse table."""
        settings = load_settings(database)
        if any(not user.strip() for user in user_ids):
            fail("a user id cannot be empty", 2)
        try:
            requests = request_erasure(settings.kafka, user_ids, by or f"cli:{getpass.getuser()}")
        except ValidationError as exc:  # not a user id the events could carry (e.g. too long)
            fail(f"not a user id: {exc.errors()[0]['msg']}", 2)
        except (KafkaUnavailableError, KafkaException, OutputDeliveryError) as exc:
            fail(f"the erasure could not be recorded, nothing was deleted: {exc}", 2)
        users = [r.user_id for r in requests]
        console.print(
            f"recorded on {erasure_topic(settings.kafka)}: {len(users)} user(s). The processors drop their "
            "state and events, the sinks their rows, from now on and in every replay."
        )
        db = settings.clickhouse.database
        try:
            client = connect(settings.clickhouse)
        except ClickHouseBusyError:
            console.print(
                "ClickHouse (chdb) is held by a running worker: its sink deletes their rows within a second "
                "(it follows ai.erasures.v1)."
            )
            return
        except Exception as exc:  # unreachable: the request is recorded; the sink deletes when it can
            reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
            err.print(
                f"[yellow]ClickHouse at {settings.clickhouse.shown_url} did not answer ({reason}): the sink "
                "deletes their rows when it next starts or reads the request. Run forget again to see it "
                "done.[/yellow]"
            )
            raise typer.Exit(3) from None
        try:
            deleted = erase_users(client, db, users)
        finally:
            client.close()
        if not deleted:
            console.print(f"no rows of theirs in database [bold]{db}[/bold]")
            return
        table = Table("table", "rows deleted", box=box.SIMPLE_HEAVY, title=f"database {db}")
        for name, rows in sorted(deleted.items()):
            table.add_row(name, f"{rows:,}")
        console.print(table)
