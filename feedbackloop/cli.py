"""The ``feedbackloop`` command: local stack, migrations, worker, queries, demo and benchmarks."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console

from feedbackloop import localstack
from feedbackloop.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
stack_app = typer.Typer(no_args_is_help=True, help="The local single-node Kafka (no Docker needed).")
app.add_typer(stack_app, name="stack")

console = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    return Settings()


@stack_app.command("fetch")
def stack_fetch() -> None:
    """Fetch the broker's jars from Maven Central into the cache."""
    settings = _settings()
    try:
        path = localstack.fetch_jars(settings.stack)
    except localstack.StackError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"Kafka {settings.stack.kafka_version} jars in {path}")


@stack_app.command("up")
def stack_up() -> None:
    """Start Kafka on 127.0.0.1 (idempotent), wait until it answers, create the topics."""
    settings = _settings()
    try:
        with console.status(f"starting Kafka {settings.stack.kafka_version} (KRaft) on 127.0.0.1 ..."):
            st = localstack.up(settings.stack, settings.kafka)
    except localstack.StackError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"Kafka is up at [bold]{st.bootstrap}[/bold] (pid {st.pid}); log: {st.log_file}")


@stack_app.command("down")
def stack_down() -> None:
    """Stop the broker that ``stack up`` started (and nothing else)."""
    settings = _settings()
    stopped = localstack.down(settings.stack)
    console.print("Kafka stopped" if stopped else "Kafka was not running (nothing of ours to stop)")


@stack_app.command("status")
def stack_status() -> None:
    """Say whether the local broker runs."""
    st = localstack.status(_settings().stack)
    if st.running:
        console.print(f"running: pid {st.pid} at {st.bootstrap}; data {st.data_dir}; log {st.log_file}")
    else:
        console.print("not running")
        raise typer.Exit(3)


@app.command("collector")
def collector(
    host: Annotated[str, typer.Option(help="Interface to bind; keep 127.0.0.1 unless a proxy fronts it.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
) -> None:
    """Serve the HTTP collector: browsers and mobile apps POST events, we publish them to Kafka."""
    from producers.collector import serve

    serve(_settings(), host=host, port=port)


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def main() -> None:
    """Entry point of the console script."""
    app()


if __name__ == "__main__":
    main()


__all__ = ["Annotated", "OutputFormat", "app", "main"]
