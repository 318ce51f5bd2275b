"""Commands of the weekly improvement cycle: ``report``, ``prompts``, ``insights`` and ``impact``.

Registered into ``feedbackloop.cli`` by one line there. Every command that reads ClickHouse first
mirrors the prompt registry and the insight thresholds into it (chdb allows one process per data
directory: with chdb these commands work while no worker runs).
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from clickhouse_connect.driver.client import Client
from rich import box
from rich.table import Table

from feedbackloop.context import connect_or_exit, load_settings
from feedbackloop.output import console, err, fail, print_rows
from infra.clickhouse import ClickHouseBusyError, connect, query_rows
from infra.settings import Settings
from producers.impact import fetch_impact
from reporting.prompts import PromptRegistry, PromptVersion, RegistryError, mirror, now
from reporting.queries import rows, sync_insight_settings
from sinks.clickhouse import migrate

app = typer.Typer(add_completion=False)
prompts_app = typer.Typer(
    no_args_is_help=True, help="The prompt registry: versions, changes and their reasons."
)
insights_app = typer.Typer(no_args_is_help=True, help="Edit patterns, segments and spikes from ClickHouse.")
app.add_typer(prompts_app, name="prompts")
app.add_typer(insights_app, name="insights")


def _registry(settings: Settings) -> PromptRegistry:
    try:
        return PromptRegistry.load(settings.insights.prompt_registry)
    except RegistryError as exc:
        fail(str(exc))


def _connect(settings: Settings, database: str | None = None) -> tuple[Client, str]:
    """A client with the registry and thresholds mirrored (exit 2 when chdb is busy). Without a registry
    file (another folder, the demo's database) the mirror is left as it is, not emptied."""
    if database:
        settings = load_settings(database)
    db = settings.clickhouse.database
    client = connect_or_exit(settings)
    migrate(client, db)
    if settings.insights.prompt_registry.exists():
        mirror(_registry(settings), client, db)
    sync_insight_settings(client, db, settings.insights)
    return client, db


DatabaseOption = Annotated[str | None, typer.Option(help="Database (default: the configured one).")]


# ----------------------------------------------------------------------------------- report


@app.command("report")
def report_cmd(
    week: Annotated[
        str | None, typer.Option(help="ISO week (2026-W48) or a date in it; default: the newest data's week.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the self-contained HTML page here.")] = None,
    database: DatabaseOption = None,
) -> None:
    """The weekly improvement report: top issues by frequency × severity, and the evidence behind them."""
    from reporting.html import write_html
    from reporting.model import build_report
    from reporting.terminal import print_report

    settings = load_settings()
    client, db = _connect(settings, database)
    try:
        report = build_report(client, db, week, settings=settings.insights)
    except ValueError as exc:
        fail(str(exc))
    finally:
        client.close()
    if report.interactions == 0:
        err.print(
            f"[yellow]database {db} has no settled interactions in {report.week_label}: run a worker with "
            "traffic, or after `make demo` look at its data with `--database demo`.[/yellow]"
        )
    print_report(report, console)
    if out is not None:
        console.print(f"\nHTML report: [bold]{write_html(report, out)}[/bold]")


# ----------------------------------------------------------------------------------- prompts


@prompts_app.command("add")
def prompts_add(
    version: Annotated[str, typer.Argument(help="The label interactions carry, e.g. v1.3.")],
    change: Annotated[str, typer.Option(help="The ONE change against the parent, in one line.")],
    text: Annotated[str | None, typer.Option(help="The prompt's text.")] = None,
    text_file: Annotated[Path | None, typer.Option(help="Read the prompt's text from this file.")] = None,
    parent: Annotated[str | None, typer.Option(help="The version this one changes.")] = None,
    reasoning: Annotated[str, typer.Option(help="Why it should help: the evidence.")] = "",
    addresses: Annotated[
        str,
        typer.Option(
            help="What it fixes, ';'-separated: 'edit: A -> B', 'insert: X', 'delete: closing paragraph', "
            "'ticket: CATEGORY' (timed from their first appearance), or prose such as 'report 2026-W48 #2'."
        ),
    ] = "",
    author: Annotated[str | None, typer.Option(help="Who made it (default: the login name).")] = None,
    created_at: Annotated[
        datetime | None, typer.Option(help="When it started serving (default: now, UTC).")
    ] = None,
) -> None:
    """Register a prompt version: its text, parent, the one change it makes and why."""
    settings = load_settings()
    if (text is None) == (text_file is None):
        fail("give the prompt's text with exactly one of --text and --text-file")
    body = text if text is not None else Path(text_file or "").read_text(encoding="utf-8")
    registry = _registry(settings)
    try:
        entry = PromptVersion(
            version=version,
            parent=parent,
            text=body,
            change=change,
            reasoning=reasoning,
            addresses=addresses,
            author=author or getpass.getuser(),
            created_at=(created_at.replace(tzinfo=created_at.tzinfo or UTC) if created_at else now()),
        )
        registry.add(entry)
    except ValueError as exc:  # RegistryError and pydantic's ValidationError
        fail(str(exc))
    registry.save()
    console.print(f"registered [bold]{version}[/bold] in {registry.path}")
    _try_mirror(settings, registry)


def _try_mirror(settings: Settings, registry: PromptRegistry) -> None:
    try:
        client = connect(settings.clickhouse)
    except ClickHouseBusyError:
        console.print("[yellow]chdb is held by a worker: mirrored by the next report[/yellow]")
        return
    except Exception as exc:  # unreachable server, bad credentials: the file is the source of truth
        console.print(f"[yellow]ClickHouse not reachable ({exc}): mirrored by the next report[/yellow]")
        return
    try:
        migrate(client, settings.clickhouse.database)
        mirror(registry, client, settings.clickhouse.database)
        console.print(f"mirrored into {settings.clickhouse.database}.prompt_versions")
    finally:
        client.close()


@prompts_app.command("list")
def prompts_list() -> None:
    """Every registered version, oldest first."""
    registry = _registry(load_settings())
    table = Table("version", "parent", "change", "author", "created", box=box.SIMPLE_HEAVY)
    for v in registry:
        table.add_row(v.version, v.parent or "", v.change, v.author, v.created_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table if len(registry) else f"no prompt version in {registry.path} yet")


@prompts_app.command("show")
def prompts_show(
    version: Annotated[str, typer.Argument(help="The version to show.")],
    results: Annotated[bool, typer.Option(help="Attach the results from ClickHouse.")] = True,
    database: DatabaseOption = None,
) -> None:
    """One version in full, with its results against its parent (when ClickHouse is free)."""
    settings = load_settings()
    registry = _registry(settings)
    try:
        v = registry.get(version)
    except RegistryError as exc:
        fail(str(exc))
    lineage = " ← ".join(x.version for x in registry.lineage(version))
    console.print(f"[bold]{v.version}[/bold]  ({lineage})  by {v.author}, {v.created_at:%Y-%m-%d %H:%M %Z}")
    console.print(f"[bold]change:[/bold] {v.change}\n[bold]why:[/bold] {v.reasoning or '–'}")
    console.print(f"[bold]addresses:[/bold] {v.addresses or '–'}\n[bold]text:[/bold]\n{v.text}")
    if not results:
        return
    client, db = _connect(settings, database)
    try:
        found = rows(client, f"SELECT * FROM {db}.prompt_changelog WHERE version = %(v)s", {"v": version})  # noqa: S608
    finally:
        client.close()
    if not found or not found[0]["interactions"]:
        console.print("[dim]no interactions with this version in ClickHouse yet[/dim]")
        return
    r = found[0]
    line = f"Prompt {version}"
    if r["parent"]:
        line += f" — improved based on {r['informed_by_corrections']:,} user corrections"
    console.print(f"\n[bold]{line}[/bold]")
    table = Table("", version, r["parent"] or "parent", "change", box=box.SIMPLE_HEAVY)
    for name in ("regeneration_rate", "edit_rate", "correction_rate", "completion_without_edit_rate"):
        mine, theirs, change = r[name], r[f"parent_{name}"], r[f"{name}_change"]
        table.add_row(
            name.replace("_", " "),
            "–" if mine is None else f"{mine:.1%}",
            "–" if theirs is None else f"{theirs:.1%}",
            "–" if change is None else f"{change * 100:+.1f} pts",
        )
    console.print(table)
    console.print(f"{r['interactions']:,} interactions from {r['users']:,} users")


# ----------------------------------------------------------------------------------- insights


@insights_app.command("sync")
def insights_sync(database: DatabaseOption = None) -> None:
    """Mirror the prompt registry and the insight thresholds into ClickHouse."""
    settings = load_settings()
    client, db = _connect(settings, database)
    client.close()
    registry = settings.insights.prompt_registry
    if not registry.exists():
        console.print(f"[yellow]no prompt registry at {registry}: the mirror in {db} stays as it is[/yellow]")
    console.print(f"prompt registry and thresholds mirrored into [bold]{db}[/bold]")


def _show_view(sql: str, database: str | None) -> None:
    client, db = _connect(load_settings(), database)
    try:
        columns, found = query_rows(client, sql.replace("{db}", db))
    finally:
        client.close()
    print_rows(columns, found)


@insights_app.command("edits")
def insights_edits(database: DatabaseOption = None) -> None:
    """Common edits: the same replacement in more than min_pattern_edits edits (view common_edits)."""
    _show_view(
        "SELECT prompt_version, original_fragment, corrected_fragment, frequency, distinct_users "
        "FROM {db}.common_edits ORDER BY frequency DESC",
        database,
    )


@insights_app.command("deletions")
def insights_deletions(database: DatabaseOption = None) -> None:
    """What users keep deleting, by position (view consistent_deletions)."""
    _show_view(
        "SELECT prompt_version, position, unit, deleting_edits, edits, share, share_capped, example "
        "FROM {db}.consistent_deletions",
        database,
    )


@insights_app.command("spikes")
def insights_spikes(database: DatabaseOption = None) -> None:
    """Input categories whose regeneration rate is far above the rest of their version."""
    _show_view(
        "SELECT prompt_version, input_category, interactions, regeneration_rate, rest_regeneration_rate, "
        "ratio, z_score, regeneration_rate_capped, flagged, flagged_capped FROM {db}.category_spikes",
        database,
    )


@insights_app.command("sizes")
def insights_sizes(database: DatabaseOption = None) -> None:
    """Edit-size mix per version: small edits refine, large ones mean a misunderstanding."""
    _show_view("SELECT * FROM {db}.edit_size_mix", database)


# ----------------------------------------------------------------------------------- impact


@app.command("impact")
def impact_cmd(
    user_id: Annotated[str, typer.Argument(help="The user, as the application identifies them.")],
    database: DatabaseOption = None,
) -> None:
    """A user's corrections and the users their feedback helped (what the SDK's fetch_impact returns)."""
    client, db = _connect(load_settings(), database)
    try:
        impact = fetch_impact(client, db, user_id)
    finally:
        client.close()
    table = Table(
        "user",
        "corrections",
        "edits",
        "regenerations",
        "thumbs-down",
        "informing",
        "users served",
        box=box.SIMPLE_HEAVY,
    )
    table.add_row(
        impact.user_id,
        f"{impact.corrections:,}",
        f"{impact.edits:,}",
        f"{impact.regenerations:,}",
        f"{impact.thumbs_down:,}",
        f"{impact.informing_corrections:,}",
        f"{impact.users_served:,}",
    )
    console.print(table)
    for message in impact.messages() or ["No corrections from this user yet."]:
        console.print(message)
