"""``mongoqueue status ID``, ``result ID --wait N`` and ``cancel ID``: one job by id.

Split from :mod:`mongoqueue.cli`, which registers these commands on its group
(the helpers they share are imported from it when a command runs).
"""

from __future__ import annotations

from typing import Any

import click

from ._cli_parsing import parse_job_id
from .tasks.results import wait_result

__all__ = ["cancel_job", "job_result", "job_status"]


def _cli() -> object:
    from . import cli

    return cli


@click.command(name="status")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def job_status(job_id: str, as_json: bool) -> None:
    """Show one job's state (waiting, delayed, running, completed, failed,
    cancelled or unknown), attempts, last error, times, and result if kept."""
    cli: Any = _cli()
    info = cli._settings().queue().status(parse_job_id(job_id))
    if as_json:
        cli._print_json(info.as_dict())
        return
    cli.out.print(f"{info.job_id}: {info.state}", markup=False)
    rows = [
        ("task", info.task),
        ("attempts", info.attempts),
        ("created", info.created_at),
        ("available", info.available_at if info.state in ("waiting", "delayed") else None),
        ("started", info.started_at if info.state == "running" else None),
        ("held by", info.locked_by),
        ("lease expired", info.lease_expired or None),
        ("cancel requested", info.cancel_requested or None),
        ("finished", info.finished_at),
        ("expires", info.expire_at),
        ("last error", cli._last_line(info.last_error) or None),
        ("result", cli._short(info.result, 200) if info.has_result else None),
    ]
    for name, value in rows:
        if value is not None:
            cli.out.print(f"  {name}: {value}", markup=False)


@click.command(name="result")
@click.argument("job_id")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds to wait for the job to finish.",
)
def job_result(job_id: str, wait: float) -> None:
    """Print a finished job's result as JSON (waiting up to --wait seconds).

    Exit code 1 when the job failed (its error is printed), was cancelled, is
    unknown, or is still not finished when the wait ends (its state is printed).
    """
    cli: Any = _cli()
    value = wait_result(cli._settings().queue(), parse_job_id(job_id), wait)
    cli._print_json(value)


@click.command(name="cancel")
@click.argument("job_id")
@click.option(
    "--keep",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds to keep a cancelled waiting job (0 deletes it).",
)
def cancel_job(job_id: str, keep: float) -> None:
    """Cancel a job: a waiting one at once, a running one at its worker's next heartbeat."""
    cli: Any = _cli()
    done = cli._settings().queue().request_cancel(parse_job_id(job_id), keep=keep)
    messages = {
        "cancelled": f"cancelled job {job_id}",
        "requested": f"asked the worker running job {job_id} to cancel it",
        "": f"job {job_id} is not waiting or running; nothing to cancel",
    }
    cli.out.print(messages[done], markup=False)
    if not done:
        raise click.exceptions.Exit(1)
