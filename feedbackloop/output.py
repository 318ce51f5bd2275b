"""What every command prints with: the consoles, query rows as a table, CSV or JSON, and failures."""

from __future__ import annotations

import csv
import json
import sys
from enum import StrEnum
from typing import Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.table import Table

#: Results go to stdout, errors and hints to stderr, so a command's output can be piped.
console = Console()
err = Console(stderr=True)


class OutputFormat(StrEnum):
    """How ``query`` and the insight commands print rows."""

    table = "table"
    csv = "csv"
    json = "json"


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` in red on stderr and end the command with exit ``code``."""
    err.print(f"[red]{message}[/red]")
    raise typer.Exit(code)


def print_rows(
    columns: list[str],
    rows: list[list[Any]],
    output: OutputFormat = OutputFormat.table,
    *,
    transpose: bool = False,
    out: Console | None = None,
) -> None:
    """Print query results as a rich table (``transpose``: one column per row), CSV or JSON lines."""
    if output is OutputFormat.json:
        for row in rows:
            sys.stdout.write(json.dumps(dict(zip(columns, row, strict=True)), default=str) + "\n")
    elif output is OutputFormat.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    elif transpose:
        table = Table(columns[0], *(cell(row[0]) for row in rows), box=box.SIMPLE_HEAVY)
        for index, name in enumerate(columns[1:], 1):
            table.add_row(name, *(cell(row[index]) for row in rows))
        (out or console).print(table)
    else:
        table = Table(*columns, box=box.SIMPLE_HEAVY)
        for row in rows:
            table.add_row(*(cell(v) for v in row))
        (out or console).print(table)


def cell(value: Any) -> str:
    """A value as a table cell: floats to four places, None as empty."""
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)
