"""The ``feedbackloop`` command: local stack, migrations, worker, queries, demo and benchmarks."""

from __future__ import annotations

import csv
import json
import logging
import sys
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from feedbackloop import cli_experiments, cli_insights, localstack
from feedbackloop.settings import Settings
from feedbackloop.worker import Stage

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
    """How ``query`` prints rows."""

    table = "table"
    csv = "csv"
    json = "json"


@app.command("migrate")
def migrate_cmd() -> None:
    """Create the ClickHouse database, tables and views (numbered migrations, applied once)."""
    from sinks.clickhouse import ClickHouseBusyError, connect, migrate

    settings = _settings()
    try:
        client = connect(settings.clickhouse)
    except ClickHouseBusyError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    applied = migrate(client, settings.clickhouse.database)
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "nothing new"
    console.print(
        f"database [bold]{settings.clickhouse.database}[/bold] at {settings.clickhouse.url}: {names}"
    )


@app.command("worker")
def worker_cmd(
    stage: Annotated[
        Stage,
        typer.Option(help="all = processors + sink + experiment evaluator (children); or one stage alone."),
    ] = Stage.all,
    loglevel: Annotated[str, typer.Option(help="crit, error, warn, info or debug.")] = "info",
) -> None:
    """Run the pipeline: Faust processors, the ClickHouse sink, the experiment evaluator."""
    from feedbackloop import worker

    settings = _settings()
    logging.basicConfig(
        level=loglevel.upper() if loglevel != "warn" else "WARNING",
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
    )
    if stage is Stage.sink:
        code = worker.run_sink(settings)
    elif stage is Stage.process:
        code = worker.run_processor(settings, loglevel)
    elif stage is Stage.experiments:
        code = worker.run_experiments(settings)
    else:
        code = worker.run_all(settings, loglevel)
    raise typer.Exit(code)


@app.command("query")
def query_cmd(
    sql: Annotated[str, typer.Argument(help="SQL to run, e.g. 'SELECT * FROM regeneration_rates'.")],
    output: Annotated[OutputFormat, typer.Option("--format", "-f", help="table, csv or json.")] = (
        OutputFormat.table
    ),
    database: Annotated[
        str | None, typer.Option(help="Database to use (default: the configured one).")
    ] = None,
) -> None:
    """Run SQL against the configured ClickHouse (chdb: only while no worker holds its directory)."""
    from sinks.clickhouse import ClickHouseBusyError, connect, query_rows

    settings = _settings()
    if database:
        settings = settings.model_copy(
            update={"clickhouse": settings.clickhouse.model_copy(update={"database": database})}
        )
    try:
        client = connect(settings.clickhouse)
    except ClickHouseBusyError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    try:
        client.command(f"USE {settings.clickhouse.database}")
        columns, rows = query_rows(client, sql)
    except Exception as exc:
        err.print(f"[red]query failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    print_rows(columns, rows, output)


@app.command("demo")
def demo_cmd(
    interactions: Annotated[int, typer.Option(help="Interactions to generate.")] = 6000,
    users: Annotated[int, typer.Option(help="Simulated users.")] = 300,
) -> None:
    """Synthetic traffic -> Kafka -> Faust -> ClickHouse, then the regeneration rates and the summary."""
    from feedbackloop.demo import run_demo

    try:
        result = run_demo(
            _settings(), console, interactions=interactions, users=users, after=_print_demo_results
        )
    except (localstack.StackError, RuntimeError, TimeoutError) as exc:
        err.print(f"[red]demo failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    ch = result.settings.clickhouse
    look = f"feedbackloop query --database {ch.database} 'SELECT * FROM prompt_version_summary'"  # noqa: S608
    console.print(
        f"\n{result.events:,} events from {result.users} users ({result.interactions:,} interactions) went "
        f"through Kafka ({result.settings.kafka.topic_namespace}.*) into ClickHouse at {ch.url}, "
        f"database [bold]{ch.database}[/bold].\nLook around: [bold]{look}[/bold]"
    )


def _print_demo_results(settings: Settings, out: Console) -> None:
    from feedbackloop.report import build_report, print_report, write_html
    from sinks.clickhouse import connect, query_rows

    client = connect(settings.clickhouse)
    client.command(f"USE {settings.clickhouse.database}")
    for title in ("regeneration_rates", "prompt_version_summary"):
        columns, rows = query_rows(client, f"SELECT * FROM {title}")  # noqa: S608 - a view name of ours
        out.rule(title)
        print_rows(columns, rows, transpose=title == "prompt_version_summary")
    report = build_report(client, settings.clickhouse.database, settings=settings.insights)
    path = write_html(report, settings.stack.home.resolve() / "report.html")
    out.rule("top issues this week")
    print_report(report, out, issues_only=True)
    out.print(f"weekly report with plots: [bold]{path}[/bold]")
    client.close()
    out.rule("experiment decisions")
    cli_experiments.print_latest_decisions(settings, out)


@app.command("schemas")
def schemas_cmd() -> None:
    """Write the JSON Schema of every contract model to schemas/json (for other languages)."""
    from schemas.export import write_json_schemas

    for path in write_json_schemas():
        console.print(f"wrote {path}")


@app.command("bench")
def bench_cmd(
    interactions: Annotated[int, typer.Option(help="Interactions in the generated workload.")] = 40_000,
    rate: Annotated[
        float, typer.Option(help="Events/s of the steady stream that latency is measured on.")
    ] = 1000,
) -> None:
    """Measure the pipeline end to end on the local broker and chdb, and its compute ceiling."""
    from feedbackloop.bench import run_pipeline_bench

    settings = _settings()
    try:
        localstack.up(settings.stack, settings.kafka)
    except localstack.StackError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    with console.status(f"benchmarking the pipeline with {interactions:,} interactions ..."):
        figures = run_pipeline_bench(settings, interactions, rate)
    table = Table("figure", "value", box=box.SIMPLE_HEAVY, title="pipeline benchmark (1 worker process)")
    for name, value in figures.items():
        if name == "latency":
            for stage, numbers in value.items():
                table.add_row(
                    f"publish -> visible, {stage}", f"p50 {numbers['p50_ms']} ms, p99 {numbers['p99_ms']} ms"
                )
        else:
            table.add_row(name, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)


def print_rows(
    columns: list[str],
    rows: list[list[Any]],
    output: OutputFormat = OutputFormat.table,
    *,
    transpose: bool = False,
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
        table = Table(columns[0], *(_cell(row[0]) for row in rows), box=box.SIMPLE_HEAVY)
        for index, name in enumerate(columns[1:], 1):
            table.add_row(name, *(_cell(row[index]) for row in rows))
        console.print(table)
    else:
        table = Table(*columns, box=box.SIMPLE_HEAVY)
        for row in rows:
            table.add_row(*(_cell(v) for v in row))
        console.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def main() -> None:
    """Entry point of the console script."""
    app()


app.add_typer(cli_insights.app)  # report, prompts, insights, impact
cli_experiments.register(app)  # experiments, alerts

if __name__ == "__main__":
    main()


__all__ = ["OutputFormat", "app", "main", "print_rows"]
