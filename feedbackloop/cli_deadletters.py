"""``feedbackloop deadletters list | replay``: look at what the pipeline gave up on, and re-drive it.

Kafka only (the dead-letter topic and the replay ledger), so both work while a worker runs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from feedbackloop.context import load_settings
from feedbackloop.deadletters import LetterFilter, identity, read_letters, replay, replayed
from feedbackloop.output import OutputFormat, console, fail
from infra.kafka import KafkaUnavailableError

app = typer.Typer(no_args_is_help=True, help="Dead letters: list them, replay them to their source topic.")

Reasons = Annotated[
    list[str] | None,
    typer.Option(
        "--reason",
        help="Error type (too_late, orphan_feedback, validation_error, ...) or a word of the reason; "
        "repeat for several.",
    ),
]
Topic = Annotated[str | None, typer.Option(help="Source topic, e.g. ai.feedback.v1.")]
Since = Annotated[
    datetime | None, typer.Option(help="Dead-lettered at or after (UTC unless a zone is given).")
]
Until = Annotated[datetime | None, typer.Option(help="Dead-lettered before (UTC unless a zone is given).")]


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=value.tzinfo or UTC) if value is not None else None


def _filter(
    reasons: list[str] | None, topic: str | None, since: datetime | None, until: datetime | None
) -> LetterFilter:
    return LetterFilter(tuple(reasons or ()), topic, _aware(since), _aware(until))


@app.command("list")
def list_cmd(
    reason: Reasons = None,
    topic: Topic = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, typer.Option(help="Show at most this many (the newest).")] = 50,
    output: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="table or json.")
    ] = OutputFormat.table,
) -> None:
    """Dead letters matching the filters, newest last, with whether each was replayed already."""
    settings = load_settings()
    wanted = _filter(reason, topic, since, until)
    try:
        done = replayed(settings)
        letters = [letter for letter, _ in read_letters(settings) if letter is not None and wanted(letter)]
    except (KafkaUnavailableError, TimeoutError) as exc:
        fail(f"could not read the dead-letter topic: {exc}", 2)
    shown = letters[-limit:] if limit > 0 else letters
    if output is OutputFormat.table:
        table = Table(
            "dead-lettered at",
            "source",
            "offset",
            "stage",
            "error",
            "replayed",
            "reason",
            box=box.SIMPLE_HEAVY,
        )
        for letter in shown:
            table.add_row(
                f"{letter.dead_lettered_at:%Y-%m-%d %H:%M:%S}",
                f"{letter.source_topic} [{letter.partition}]",
                str(letter.offset),
                letter.stage,
                letter.error_type,
                "yes" if identity(letter) in done else "",
                letter.reason if len(letter.reason) <= 120 else letter.reason[:117] + "...",
            )
        console.print(table)
        console.print(
            f"{len(letters):,} matching dead letters"
            + (f", the newest {len(shown):,} shown" if len(shown) < len(letters) else "")
        )
    else:
        for letter in shown:
            record = {**letter.model_dump(mode="json"), "replayed": identity(letter) in done}
            typer.echo(json.dumps(record))


@app.command("replay")
def replay_cmd(
    reason: Reasons = None,
    topic: Topic = None,
    since: Since = None,
    until: Until = None,
    dry_run: Annotated[bool, typer.Option(help="Only say what would be published.")] = False,
) -> None:
    """Publish the matching dead letters' original messages to their source topics, each only once."""
    settings = load_settings()
    if not (reason or topic or since or until):
        fail(
            "say which dead letters to replay: --reason, --topic, --since or --until "
            "(all of them: --since 2000-01-01)"
        )
    wanted = _filter(reason, topic, since, until)
    try:
        letters = [letter for letter, _ in read_letters(settings) if letter is not None and wanted(letter)]
        result = replay(settings, letters, dry_run=dry_run)
    except (KafkaUnavailableError, TimeoutError) as exc:
        fail(f"replay failed: {exc}", 2)
    if dry_run:
        console.print(
            f"{result.matched:,} matching dead letters: {result.would_publish:,} would be published, "
            f"{result.already_replayed:,} were replayed before, {result.without_value:,} have no value"
        )
    else:
        console.print(
            f"{result.matched:,} matching dead letters: {result.published:,} published to their source "
            f"topics, {result.already_replayed:,} were replayed before, "
            f"{result.without_value:,} have no value"
        )
