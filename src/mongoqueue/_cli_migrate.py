"""``mongoqueue migrate``: convert a mongoqueue 0.7 collection in place (see
:mod:`mongoqueue.migration`)."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from .migration import MigrationReport, migrate

__all__ = ["migrate_command"]

_ROWS = ("waiting", "failed", "running", "unclassifiable", "current", "total")


def _table(report: MigrationReport) -> Table:
    title = report.collection + (" (dry run: nothing written)" if report.dry_run else "")
    table = Table(title=title)
    table.add_column("documents")
    for column in ("before", "converted", "after"):
        table.add_column(column, justify="right")
    for row in _ROWS:
        label = f"0.7 {row}" if row not in ("current", "total") else f"{row} jobs"
        converted = report.converted.get(row)
        table.add_row(
            label,
            str(report.before[row]),
            "" if converted is None else str(converted),
            str(report.after[row]),
        )
    return table


@click.command(name="migrate")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    help="The queue's lease in seconds: jobs held by old consumers get one from now.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="The queue's max attempts: jobs that reached it become failed.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Convert at most this many documents.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Documents read and converted per round trip.",
)
@click.option("--dry-run", is_flag=True, help="Only count and check; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def migrate_command(
    settings: Any,
    timeout: float,
    max_attempts: int,
    limit: int | None,
    batch_size: int,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Convert the jobs of a mongoqueue 0.7 queue in place (stop the old consumers first).

    Waiting jobs stay waiting in their order, jobs with --max-attempts attempts
    become failed with their last error, and jobs held by an old consumer get a
    lease of --timeout seconds from now. Refuses (writing nothing) when it finds
    documents it cannot classify. Safe to run again: it resumes, and converts
    nothing twice.
    """
    collection = settings.client()[settings.db][settings.collection]
    report = migrate(
        collection,
        timeout=timeout,
        max_attempts=max_attempts,
        limit=limit,
        dry_run=dry_run,
        batch_size=batch_size,
    )
    out = Console(highlight=False, soft_wrap=True)
    if as_json:
        out.print(json.dumps(report.as_dict()), markup=False)
    else:
        out.print(_table(report))
    if not report.complete and not dry_run:
        left = report.after["total"] - report.after["current"]
        Console(stderr=True).print(f"{left} documents left to convert: run the command again")
