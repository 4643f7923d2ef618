"""The ``mongoqueue`` command (extra ``cli``; also ``python -m mongoqueue``).

Commands: ``put``, ``stats``, ``list``, ``peek``, ``failed``, ``requeue``,
``purge``, ``worker``, ``dashboard`` and ``demo``; ``mongoqueue COMMAND --help`` for each.
The server comes from ``--uri`` or ``MONGODB_URI`` (default
``mongodb://localhost:27017``), the queue from ``--db`` and ``--collection``.

Errors are one line on stderr with a non-zero exit code: 1 for a failed
operation, 2 for bad arguments, 3 when MongoDB cannot be reached (the worker's
codes are listed in :mod:`mongoqueue.worker`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

try:
    import click
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise SystemExit(
        "the mongoqueue command needs the 'cli' extra: pip install 'mongoqueue[cli]'"
    ) from exc

import pymongo.errors
from bson import json_util
from pymongo import MongoClient

from . import operations as ops
from ._cli_parsing import (
    JSON_OPTIONS,
    load_handler,
    parse_handler_spec,
    parse_job_id,
    parse_payloads,
    redact,
)
from ._cli_worker import import_extra, run_worker
from .errors import (
    InvalidArgument,
    InvalidArgumentType,
    MongoQueueError,
    QueueUnavailable,
    driver_errors,
)
from .job import Job
from .queue import MongoQueue
from .retry import RetryPolicy
from .worker import EXIT_ERROR, EXIT_UNAVAILABLE, EXIT_USAGE

__all__ = [
    "cli",
    "load_handler",
    "main",
    "parse_handler_spec",
    "parse_job_id",
    "parse_payloads",
    "redact",
]

DEFAULT_URI = "mongodb://localhost:27017"
#: Jobs per insert when ``put`` reads many payloads from stdin.
PUT_BATCH = 500

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- connection


@dataclass
class Settings:
    uri: str
    db: str
    collection: str
    server_timeout: float
    uri_given: bool
    _client: MongoClient[dict[str, Any]] | None = None

    @property
    def client_options(self) -> dict[str, Any]:
        timeout_ms = max(1, int(self.server_timeout * 1000))
        return {"serverSelectionTimeoutMS": timeout_ms, "appname": "mongoqueue-cli"}

    def client(self) -> MongoClient[dict[str, Any]]:
        if self._client is None:
            try:
                self._client = MongoClient(self.uri, **self.client_options)
            except ValueError as exc:  # pymongo raises a bare ValueError for some URIs
                raise BadArgument(f"invalid connection settings: {exc}") from exc
        return self._client

    @staticmethod
    def consumer(consumer_id: str | None) -> str:
        return consumer_id or f"{socket.gethostname()}-{os.getpid()}"

    def queue(self, consumer_id: str | None = None, **options: Any) -> MongoQueue:
        collection = self.client()[self.db][self.collection]
        return MongoQueue(collection, self.consumer(consumer_id), **options)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _settings() -> Settings:
    settings: Settings = click.get_current_context().find_object(Settings)  # type: ignore[assignment]
    return settings


class OperationFailed(click.ClickException):
    exit_code = EXIT_ERROR


class BadArgument(click.ClickException):
    exit_code = EXIT_USAGE


class Unreachable(click.ClickException):
    exit_code = EXIT_UNAVAILABLE


class _Group(click.Group):
    """Turns our errors and the driver's into one-line errors with meaningful exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except QueueUnavailable as exc:
            settings = ctx.find_object(Settings)
            where = f" at {redact(settings.uri)}" if settings is not None else ""
            raise Unreachable(
                f"could not reach MongoDB{where}; check --uri or MONGODB_URI and that the "
                "server is running"
            ) from exc
        except (InvalidArgument, InvalidArgumentType) as exc:
            raise BadArgument(str(exc)) from exc
        except pymongo.errors.ConfigurationError as exc:
            raise BadArgument(f"invalid connection settings: {exc}") from exc
        except pymongo.errors.InvalidName as exc:
            raise BadArgument(f"invalid database or collection name: {exc}") from exc
        except (MongoQueueError, pymongo.errors.PyMongoError) as exc:
            raise OperationFailed(str(exc)) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--uri",
    envvar="MONGODB_URI",
    default=DEFAULT_URI,
    show_default=True,
    help="MongoDB connection string (or set MONGODB_URI).",
)
@click.option("--db", default="mongoqueue", show_default=True, help="Database of the queue.")
@click.option("--collection", default="jobs", show_default=True, help="Collection of the queue.")
@click.option(
    "--server-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds to wait for the server before giving up.",
)
@click.version_option(package_name="mongoqueue")
@click.pass_context
def cli(ctx: click.Context, uri: str, db: str, collection: str, server_timeout: float) -> None:
    """mongoqueue: a job queue in MongoDB. Put jobs, inspect the queue, run workers."""
    source = ctx.get_parameter_source("uri")
    given = source is not None and source.name == "COMMANDLINE"
    settings = Settings(uri, db, collection, server_timeout, uri_given=given)
    ctx.obj = settings
    ctx.call_on_close(settings.close)


# --------------------------------------------------------------------------- put


def _batches(docs: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(docs), size):
        yield docs[start : start + size]


@cli.command()
@click.argument("payload", required=False)
@click.option("--priority", type=int, default=0, show_default=True, help="Higher runs first.")
@click.option("--delay", type=float, help="Seconds before the job may run.")
@click.option("--key", help="Deduplication key: no second job while one with it is active.")
@click.option("--max-attempts", type=int, help="This job's own attempt limit.")
def put(
    payload: str | None,
    priority: int,
    delay: float | None,
    key: str | None,
    max_attempts: int | None,
) -> None:
    """Add a job; prints its id.

    PAYLOAD is a JSON object. Without it (or with "-") payloads are read from
    stdin: one object, or one per line (JSON Lines), put in batches.
    """
    text = sys.stdin.read() if payload in (None, "-") else payload
    docs = parse_payloads(text or "")
    queue = _settings().queue()
    if len(docs) == 1:
        job_id = queue.put(docs[0], priority, delay=delay, key=key, max_attempts=max_attempts)
        out.print(str(job_id))
        return
    if key is not None:
        raise click.UsageError("--key applies to one job; give one payload with it")
    ids: list[Any] = []
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("putting jobs", total=len(docs))
        for batch in _batches(docs, PUT_BATCH):
            ids += queue.put_many(batch, priority, delay=delay, max_attempts=max_attempts)
            progress.advance(task, len(batch))
    out.print("\n".join(str(i) for i in ids))
    err.print(f"put {len(ids)} jobs")


# --------------------------------------------------------------------------- inspection


def _short(value: Any, width: int = 60) -> str:
    text = json_util.dumps(value, json_options=JSON_OPTIONS)
    return text if len(text) <= width else text[: width - 1] + "…"


def _when(job: Job) -> str:
    at = job.available_at
    return "" if at is None else at.strftime("%Y-%m-%d %H:%M:%S")


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _print_json(value: Any) -> None:
    out.print(json_util.dumps(value, json_options=JSON_OPTIONS, indent=2), markup=False)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def stats(as_json: bool) -> None:
    """Count the jobs by state."""
    counts = _settings().queue().stats()
    if as_json:
        out.print(json.dumps(counts), markup=False)
        return
    table = Table(title=f"{_settings().db}.{_settings().collection}")
    table.add_column("state")
    table.add_column("jobs", justify="right")
    for name in ops.STATS_KEYS:
        table.add_row(name, str(counts[name]))
    out.print(table)


def _jobs(state: str, limit: int) -> list[Job]:
    queue = _settings().queue()
    with driver_errors():
        cursor = queue.collection.find(ops.state_filter(state, queue._now()))
        return [Job(queue, doc) for doc in cursor.sort(ops.CLAIM_SORT).limit(limit)]


STATE_OPTION = click.Choice(ops.LIST_STATES)


@cli.command(name="list")
@click.option("--state", type=STATE_OPTION, default="all", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON documents instead of a table.")
def list_jobs(state: str, limit: int, as_json: bool) -> None:
    """List jobs in claim order (priority, then first in first out)."""
    queue = _settings().queue()
    jobs = _jobs(state, limit)
    if as_json:
        _print_json([job.data for job in jobs])
        return
    if not jobs:
        err.print(f"no {'' if state == 'all' else state + ' '}jobs")
        return
    now = queue._now()
    table = Table()
    table.add_column("id", no_wrap=True, min_width=24)
    table.add_column("state", no_wrap=True, min_width=7)
    table.add_column("pri", no_wrap=True, justify="right", min_width=3)
    table.add_column("att", no_wrap=True, justify="right", min_width=3)
    table.add_column("due (UTC)", no_wrap=True, min_width=19)
    table.add_column("held by", no_wrap=True, min_width=8, max_width=16)
    table.add_column("key", no_wrap=True, min_width=8, max_width=16)
    # The other columns take about 100 characters; the payload gets the rest.
    width = max(12, out.width - 100)
    table.add_column("payload", overflow="ellipsis", no_wrap=True, max_width=width)
    for job in jobs:
        shown = job.state
        if shown == "waiting" and job.available_at is not None and job.available_at > now:
            shown = "delayed"
        table.add_row(
            str(job.id),
            shown,
            str(job.priority),
            str(job.attempts),
            _when(job),
            job.locked_by or "",
            job.key or "",
            _short(job.payload, width),
        )
    out.print(table)


@cli.command()
@click.option("--state", type=STATE_OPTION, default="available", show_default=True)
@click.option("-n", "--limit", type=click.IntRange(min=1), default=1, show_default=True)
def peek(state: str, limit: int) -> None:
    """Show the next jobs in full (JSON) without claiming them."""
    jobs = _jobs(state, limit)
    if not jobs:
        err.print(f"no {'' if state == 'all' else state + ' '}jobs")
        return
    for job in jobs:
        _print_json(job.data)


@cli.command()
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON documents instead of a table.")
@click.option("--full", is_flag=True, help="Print each job's whole last error (traceback).")
def failed(limit: int, as_json: bool, full: bool) -> None:
    """Failed jobs (max attempts reached) with their last errors, oldest first."""
    jobs = _settings().queue().failed(limit)
    if as_json:
        _print_json([job.data for job in jobs])
        return
    if full:
        for job in jobs:
            out.print(f"[bold]{job.id}[/] attempts={job.attempts} payload={_short(job.payload)}")
            out.print(job.last_error or "(no error recorded)", markup=False)
        return
    if not jobs:
        err.print("no failed jobs")
        return
    table = Table()
    table.add_column("id", no_wrap=True)
    table.add_column("attempts")
    table.add_column("payload", no_wrap=True, overflow="ellipsis", max_width=40)
    table.add_column("last error")
    for job in jobs:
        table.add_row(
            str(job.id), str(job.attempts), _short(job.payload, 40), _last_line(job.last_error)
        )
    out.print(table)


@cli.command()
@click.argument("job_ids", nargs=-1)
@click.option("--all", "all_jobs", is_flag=True, help="Requeue every failed job.")
def requeue(job_ids: tuple[str, ...], all_jobs: bool) -> int:
    """Put failed jobs back in the queue, their attempts reset."""
    if bool(job_ids) == all_jobs:
        raise click.UsageError("give the ids of failed jobs, or --all (not both)")
    queue = _settings().queue()
    if all_jobs:
        with err.status("requeueing failed jobs"):
            count = queue.requeue()
        out.print(f"requeued {count} jobs")
        return 0
    count = 0
    for text in job_ids:
        if queue.requeue(parse_job_id(text)) == 0:
            err.print(f"not requeued: {text} is not a failed job")
        else:
            count += 1
    out.print(f"requeued {count} jobs")
    return 0 if count == len(job_ids) else EXIT_ERROR


@cli.command()
@click.option("--all", "all_jobs", is_flag=True, help="Delete every job, not only failed ones.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (with --all).")
def purge(all_jobs: bool, yes: bool) -> None:
    """Delete failed jobs (with --all: every job)."""
    queue = _settings().queue()
    if all_jobs:
        if not yes:
            click.confirm(f"delete every job in {queue.collection.full_name}?", abort=True)
        with err.status("deleting jobs"):
            count = queue.clear()
    else:
        with err.status("deleting failed jobs"):
            count = queue.purge_failed()
    out.print(f"deleted {count} jobs")


# --------------------------------------------------------------------------- worker


@cli.command()
@click.argument("handler")
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Jobs run at once (threads; tasks for an async def handler).",
)
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Lease in seconds; heartbeats renew it while a job runs.",
)
@click.option("--heartbeat", type=float, help="Seconds between heartbeats [default: timeout/3].")
@click.option("--hard-limit", type=float, help="Abandon a handler running longer than this.")
@click.option(
    "--grace",
    type=float,
    default=30.0,
    show_default=True,
    help="On SIGTERM/SIGINT, seconds running jobs get to finish before release.",
)
@click.option("--max-attempts", type=int, default=3, show_default=True)
@click.option(
    "--retry-initial",
    type=float,
    default=1.0,
    show_default=True,
    help="Backoff after the first failure (seconds; doubles each time).",
)
@click.option(
    "--retry-max", type=float, default=300.0, show_default=True, help="Longest backoff (seconds)."
)
@click.option(
    "--burst",
    is_flag=True,
    help="Exit once no job is due (delayed and other workers' jobs do not count).",
)
@click.option("--consumer-id", help="This worker's name in the queue [default: host-pid].")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
    default="INFO",
    show_default=True,
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    help="Serve Prometheus metrics on this port (extra 'metrics').",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address of --metrics-port."
)
def worker(
    handler: str,
    concurrency: int,
    timeout: float,
    heartbeat: float | None,
    hard_limit: float | None,
    grace: float,
    max_attempts: int,
    retry_initial: float,
    retry_max: float,
    burst: bool,
    consumer_id: str | None,
    log_level: str,
    metrics_port: int | None,
    metrics_host: str,
) -> int:
    """Run HANDLER (module:function) on each job; it is called with the Job.

    A coroutine function (async def) runs on asyncio with an AsyncJob
    (AsyncWorker), the others in threads (Worker); the options are the same.

    Exit codes: 0 stopped as asked, 1 failed, 2 bad usage, 3 MongoDB
    unreachable, 128+N second signal N.
    """
    function = load_handler(handler)
    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    retry = RetryPolicy(initial=retry_initial, maximum=max(retry_max, retry_initial))
    return run_worker(
        _settings(),
        function,
        consumer_id,
        {"timeout": timeout, "max_attempts": max_attempts, "retry": retry},
        {
            "concurrency": concurrency,
            "heartbeat": heartbeat,
            "hard_limit": hard_limit,
            "grace": grace,
            "burst": burst,
        },
        metrics_port=metrics_port,
        metrics_host=metrics_host,
    )


# --------------------------------------------------------------------------- dashboard


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(min=0, max=65535), default=8080, show_default=True)
@click.option(
    "--allow-actions",
    is_flag=True,
    help="Enable requeue, purge and cancel buttons (POST with CSRF token). Off by default.",
)
@click.option(
    "--sample-interval",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds between samples of the counts (the throughput chart).",
)
@click.option(
    "--window",
    type=click.FloatRange(min=1),
    default=15.0,
    show_default=True,
    help="Minutes of history the charts show.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def dashboard(
    host: str,
    port: int,
    allow_actions: bool,
    sample_interval: float,
    window: float,
    log_level: str,
) -> None:
    """Serve the web dashboard of the queues in --db (extra 'dashboard').

    Read-only unless --allow-actions. Also serves Prometheus depth gauges at /metrics.
    """
    settings = _settings()
    run = import_extra("mongoqueue.dashboard", "dashboard").run
    db = settings.client()[settings.db]
    with driver_errors():
        db.command("ping")
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"warning: the dashboard listens on {host}; it has no login", markup=False)
    err.print(f"mongoqueue dashboard: http://{host}:{port}/ (database {settings.db})")
    run(
        db,
        host=host,
        port=port,
        allow_actions=allow_actions,
        sample_interval=sample_interval,
        window=window * 60,
        log_level=log_level,
    )


@cli.command()
@click.option("-n", "--jobs", type=click.IntRange(min=1, max=10_000), default=30, show_default=True)
@click.option(
    "-k",
    "--workers",
    type=click.IntRange(min=2, max=32),
    default=3,
    show_default=True,
    help="Worker processes (one of them is killed mid-job).",
)
@click.option("--data-dir", type=click.Path(file_okay=False), help="Embedded server's data.")
@click.option(
    "--lease",
    type=click.FloatRange(min=0.5),
    default=2.0,
    show_default=True,
    help="Lease in seconds: how soon the killed worker's job comes back.",
)
@click.option("--uri", "demo_uri", help="Use this MongoDB instead of the embedded server.")
def demo(jobs: int, workers: int, data_dir: str | None, lease: float, demo_uri: str | None) -> int:
    """Run workers on an embedded server, kill one mid-job, and check every job ran once."""
    from .demo import run_demo

    settings = _settings()
    uri = demo_uri or (settings.uri if settings.uri_given else None)
    return run_demo(
        jobs=jobs, workers=workers, uri=uri, data_dir=data_dir, lease=lease, console=out
    )


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code. Errors are reported in one line."""
    try:
        result = cli.main(args=argv, prog_name="mongoqueue", standalone_mode=False)
    except click.exceptions.Abort:
        err.print("mongoqueue: aborted")
        return EXIT_ERROR
    except click.ClickException as exc:
        message = " ".join(exc.format_message().split())
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            message += f" (see: {exc.ctx.command_path} --help)"
        err.print(f"mongoqueue: error: {message}", markup=False)
        return exc.exit_code
    return result if isinstance(result, int) else 0
