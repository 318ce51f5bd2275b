"""The ``feedbackloop`` command: local stack, migrations, worker, queries, demo and benchmarks."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from feedbackloop import cli_deadletters, cli_experiments, cli_insights, cli_privacy, doctor, localstack
from feedbackloop.context import connect_or_exit, load_settings
from feedbackloop.output import OutputFormat, console, fail, print_rows
from feedbackloop.worker import Stage
from infra.clickhouse import query_rows
from infra.settings import Settings

# A crash shows no local variables: one of them may hold a secret (typer's default, kept on purpose).
app = typer.Typer(
    no_args_is_help=True, add_completion=False, help=__doc__, pretty_exceptions_show_locals=False
)
stack_app = typer.Typer(no_args_is_help=True, help="The local single-node Kafka (no Docker needed).")
app.add_typer(stack_app, name="stack")


@stack_app.command("fetch")
def stack_fetch() -> None:
    """Fetch the broker's jars from Maven Central into the cache."""
    settings = load_settings()
    try:
        path = localstack.fetch_jars(settings.stack)
    except localstack.StackError as exc:
        fail(str(exc))
    console.print(f"Kafka {settings.stack.kafka_version} jars in {path}")


@stack_app.command("up")
def stack_up() -> None:
    """Start Kafka on 127.0.0.1 (idempotent), wait until it answers, create the topics."""
    settings = load_settings()
    try:
        with console.status(f"starting Kafka {settings.stack.kafka_version} (KRaft) on 127.0.0.1 ..."):
            st = localstack.up(settings.stack, settings.kafka)
    except localstack.StackError as exc:
        fail(str(exc))
    console.print(f"Kafka is up at [bold]{st.bootstrap}[/bold] (pid {st.pid}); log: {st.log_file}")


@stack_app.command("down")
def stack_down() -> None:
    """Stop the broker that ``stack up`` started (and nothing else)."""
    settings = load_settings()
    stopped = localstack.down(settings.stack)
    console.print("Kafka stopped" if stopped else "Kafka was not running (nothing of ours to stop)")


@stack_app.command("status")
def stack_status() -> None:
    """Say whether the local broker runs."""
    st = localstack.status(load_settings().stack)
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

    serve(load_settings(), host=host, port=port)


@app.command("migrate")
def migrate_cmd() -> None:
    """Create the ClickHouse database, tables and views (numbered migrations, applied once), then bring
    the raw-text TTLs to FEEDBACKLOOP_RETENTION__RAW_TEXT_DAYS."""
    from sinks.clickhouse import apply_retention, migrate

    settings = load_settings()
    client = connect_or_exit(settings)
    database = settings.clickhouse.database
    applied = migrate(client, database)
    days = settings.retention.raw_text_days
    changed = apply_retention(client, database, days)
    client.close()
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "nothing new"
    console.print(f"database [bold]{database}[/bold] at {settings.clickhouse.shown_url}: {names}")
    if days is None:
        console.print(
            "retention: raw text TTLs left as they were (FEEDBACKLOOP_RETENTION__RAW_TEXT_DAYS unset)"
        )
    else:
        kept = f"{days} days" if days else "until erased"
        done = f"{len(changed)} TTLs changed" if changed else "already so"
        console.print(f"retention: raw text kept {kept} ({done})")


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

    settings = load_settings()
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
    settings = load_settings(database)
    client = connect_or_exit(settings)
    try:
        client.command(f"USE {settings.clickhouse.database}")
        columns, rows = query_rows(client, sql)
    except Exception as exc:
        fail(f"query failed: {exc}")
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
            load_settings(), console, interactions=interactions, users=users, after=_print_demo_results
        )
    except (localstack.StackError, RuntimeError, TimeoutError) as exc:
        fail(f"demo failed: {exc}")
    ch = result.settings.clickhouse
    look = f"feedbackloop query --database {ch.database} 'SELECT * FROM prompt_version_summary'"  # noqa: S608
    console.print(
        f"\n{result.events:,} events from {result.users} users ({result.interactions:,} interactions) went "
        f"through Kafka ({result.settings.kafka.topic_namespace}.*) into ClickHouse at {ch.shown_url}, "
        f"database [bold]{ch.database}[/bold].\nLook around: [bold]{look}[/bold]"
    )


def _print_demo_results(settings: Settings, out: Console) -> None:
    from reporting.html import write_html
    from reporting.model import build_report
    from reporting.terminal import print_loop, print_report

    client = connect_or_exit(settings)
    client.command(f"USE {settings.clickhouse.database}")
    for title in ("regeneration_rates", "prompt_version_summary"):
        columns, rows = query_rows(client, f"SELECT * FROM {title}")  # noqa: S608 - a view name of ours
        out.rule(title)
        print_rows(columns, rows, transpose=title == "prompt_version_summary", out=out)
    report = build_report(client, settings.clickhouse.database, settings=settings.insights)
    path = write_html(report, settings.stack.home.resolve() / "report.html")
    out.rule("top issues this week")
    print_report(report, out, issues_only=True)
    print_loop(report.loop, out)
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


def _broker_for_bench(settings: Settings) -> None:
    """Use the broker that answers at the configured bootstrap servers; start the local one only if
    none does (a second broker on the same port would fail, and a shared one must not be touched).

    The application's own topics are left alone: every phase creates topics of its own namespace,
    with the partitions asked for (``--partitions`` must not meet the existing topics' count)."""
    from infra.kafka import KafkaUnavailableError, wait_for_broker

    try:
        wait_for_broker(settings.kafka, timeout_s=3.0)
    except KafkaUnavailableError:
        try:
            localstack.up(settings.stack, settings.kafka)
        except localstack.StackError as exc:
            fail(str(exc))


@app.command("bench")
def bench_cmd(
    interactions: Annotated[int, typer.Option(help="Interactions in the generated workload.")] = 40_000,
    rate: Annotated[
        float, typer.Option(help="Events/s of the steady stream that latency is measured on.")
    ] = 1000,
    partitions: Annotated[
        int | None, typer.Option(help="Partitions of every topic (default: FEEDBACKLOOP_KAFKA__PARTITIONS).")
    ] = None,
    naive: Annotated[bool, typer.Option(help="Run the naive peer on the same workload.")] = True,
    scale_out: Annotated[
        bool, typer.Option(help="Run two processor processes and a sink on the same workload.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON (stable keys).")] = False,
    soak: Annotated[
        bool, typer.Option(help="Instead: a steady load for --soak-minutes, RSS and lag sampled every 10 s.")
    ] = False,
    soak_minutes: Annotated[float, typer.Option(help="How long the soak runs.")] = 10.0,
    soak_rate: Annotated[
        float | None,
        typer.Option(
            help="Events/s of the soak (default: half the capacity a short throughput run measures)."
        ),
    ] = None,
) -> None:
    """Measure the pipeline end to end on the local broker and chdb, beside the naive peer, and its
    compute ceiling; or (--soak) hold a steady load and watch memory and lag."""
    import json

    from feedbackloop.bench import prepare, run_pipeline_bench, run_soak, throughput

    settings = load_settings()
    # Before --partitions: a local stack started here creates the application's topics as configured.
    _broker_for_bench(settings)
    if partitions is not None:
        settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"partitions": partitions})}
        )
    if soak:
        if soak_rate is None:
            with console.status("measuring capacity (10,000 interactions) ..."):
                capacity = throughput(settings, prepare(10_000))["end_to_end_events_per_s"]
            soak_rate = capacity / 2
            console.print(f"capacity {capacity:,} events/s: soaking at {soak_rate:,.0f} events/s")

        def show(sample: Any) -> None:
            if not as_json:
                console.print(
                    f"{sample.at_s:6.0f}s  processor RSS {sample.processor_rss_mb:7.1f} MB  sink RSS "
                    f"{sample.sink_rss_mb:7.1f} MB  lag {sample.processor_lag:6,} / {sample.sink_lag:6,}  "
                    f"published {sample.published:,}"
                )

        figures = run_soak(settings, soak_rate, soak_minutes, on_sample=show)
    else:
        with console.status(f"benchmarking the pipeline with {interactions:,} interactions ...") as status:
            figures = run_pipeline_bench(
                settings, interactions, rate, naive=naive, scale=scale_out,
                on_phase=lambda phase: status.update(f"benchmarking: {phase} ..."),
            )  # fmt: skip
    if as_json:
        print(json.dumps(figures, indent=2))
        return
    table = Table("figure", "value", box=box.SIMPLE_HEAVY, title="pipeline benchmark")
    for name, value in figures.items():
        if name == "samples":
            continue
        if isinstance(value, dict):
            for key, item in value.items():
                table.add_row(f"{name}: {key}", _figure(item))
        else:
            table.add_row(name, _figure(value))
    console.print(table)


def _figure(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_figure(v)}" for k, v in value.items())
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def main() -> None:
    """Entry point of the console script."""
    app()


app.add_typer(cli_insights.app)  # report, prompts, insights, impact
cli_experiments.register(app)  # experiments, alerts
app.add_typer(cli_deadletters.app, name="deadletters")
doctor.register(app)  # doctor
cli_privacy.register(app)  # forget

if __name__ == "__main__":
    main()


__all__ = ["app", "main"]
