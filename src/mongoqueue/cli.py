"""The ``mongoqueue`` command (extra ``cli``; also ``python -m mongoqueue``).

Commands: ``put``, ``stats``, ``list``, ``peek``, ``failed``, ``requeue``,
``purge``, ``worker``, ``dashboard``, ``demo`` and ``migrate``; ``mongoqueue COMMAND
--help`` for each.
The server comes from ``--uri`` or ``MONGODB_URI`` (default
``mongodb://localhost:27017``), the queue from ``--db`` and ``--collection``.

Errors are one line on stderr with a non-zero exit code: 1 for a failed
operation, 2 for bad arguments (an invalid URI, failed authentication), 3 when
MongoDB cannot be reached, 4 when the dashboard or a worker's metrics would
listen beyond loopback without authentication, 5 when their port is already in
use (the worker's codes are listed in :mod:`mongoqueue.worker`).
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
    from rich.markup import escape
    from rich.progress import Progress
    from rich.table import Table
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise SystemExit(
        "the mongoqueue command needs the 'cli' extra: pip install 'mongoqueue[cli]'"
    ) from exc

import pymongo.errors
from bson import json_util
from pymongo import MongoClient
from pymongo.uri_parser import parse_uri

from . import operations as ops
from ._cli_jobs import cancel_job, job_result, job_status
from ._cli_migrate import migrate_command
from ._cli_parsing import (
    JSON_OPTIONS,
    is_app,
    load_handler,
    parse_handler_spec,
    parse_job_id,
    parse_payloads,
    redact,
)
from ._cli_worker import import_extra, run_app_worker, run_worker
from .errors import (
    InvalidArgument,
    InvalidArgumentType,
    MongoQueueError,
    QueueUnavailable,
    driver_errors,
)
from .httpauth import (
    DEFAULT_USER,
    AuthenticationRequired,
    BasicAuth,
    PortInUse,
    TrustedProxy,
    bind,
    read_password,
    require_auth,
)
from .job import Job
from .partitions import META_COLLECTION, recorded_partitions
from .presence import read_workers
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
DEFAULT_DB = "mongoqueue"
#: The dashboard or a worker's metrics would listen beyond loopback without authentication.
EXIT_NO_AUTH = 4
#: The dashboard's or the metrics' port is already in use.
EXIT_PORT_IN_USE = 5
#: Server error codes of a failed authentication (AuthenticationFailed, UserNotFound).
AUTH_FAILED_CODES = frozenset({18, 11})
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

    def check_uri(self) -> None:
        """Refuse what is not a MongoDB connection string (pymongo would take it as a host)."""
        if not self.uri.startswith(("mongodb://", "mongodb+srv://")):
            raise BadArgument(
                f"invalid MongoDB URI {redact(self.uri)!r}: it must start with mongodb:// or "
                "mongodb+srv:// (check --uri or MONGODB_URI)"
            )

    def client(self) -> MongoClient[dict[str, Any]]:
        if self._client is None:
            self.check_uri()
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
        options.setdefault("partitions", self.partitions())
        return MongoQueue(collection, self.consumer(consumer_id), **options)

    def partitions(self) -> int:
        """The queue's recorded count of partitions (1 when none is recorded)."""
        database = self.client()[self.db]
        with driver_errors():
            record = database[META_COLLECTION].find_one({"_id": self.collection})
        return recorded_partitions(record)

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


class NoAuthentication(click.ClickException):
    exit_code = EXIT_NO_AUTH


class AddressInUse(click.ClickException):
    exit_code = EXIT_PORT_IN_USE


def plural(count: int, noun: str) -> str:
    """``1 job``, ``2 jobs``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _auth_failure(exc: BaseException) -> pymongo.errors.OperationFailure | None:
    """The server's authentication failure behind ``exc``, if that is what it is."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, pymongo.errors.OperationFailure) and seen.code in AUTH_FAILED_CODES:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _db_from_uri(uri: str) -> str | None:
    """The database named in a connection string, without resolving an SRV name."""
    if uri.startswith("mongodb+srv://"):  # one host, no port: parses the same as mongodb://
        uri = "mongodb://" + uri.removeprefix("mongodb+srv://")
    try:
        database: str | None = parse_uri(uri, warn=True)["database"]
    except Exception:  # a bad URI is reported when the client is made
        return None
    return database


class _Group(click.Group):
    """Turns our errors and the driver's into one-line errors with meaningful exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AuthenticationRequired as exc:
            raise NoAuthentication(str(exc)) from exc
        except PortInUse as exc:
            raise AddressInUse(str(exc)) from exc
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
            failure = _auth_failure(exc)
            if failure is not None:
                settings = ctx.find_object(Settings)
                where = f" at {redact(settings.uri)}" if settings is not None else ""
                raise BadArgument(
                    f"MongoDB refused the credentials{where} (authentication failed); check "
                    "the user name, the password and authSource in --uri or MONGODB_URI"
                ) from exc
            raise OperationFailed(str(exc)) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--uri",
    envvar="MONGODB_URI",
    default=DEFAULT_URI,
    show_default=True,
    help="MongoDB connection string (or set MONGODB_URI).",
)
@click.option(
    "--db",
    help=f"Database of the queue [default: the one named in the URI, else {DEFAULT_DB}].",
)
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
def cli(
    ctx: click.Context, uri: str, db: str | None, collection: str, server_timeout: float
) -> None:
    """mongoqueue: a job queue in MongoDB. Put jobs, inspect the queue, run workers."""
    source = ctx.get_parameter_source("uri")
    given = source is not None and source.name == "COMMANDLINE"
    database = db or _db_from_uri(uri) or DEFAULT_DB
    settings = Settings(uri, database, collection, server_timeout, uri_given=given)
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
    if payload in (None, "-") and sys.stdin.isatty():
        err.print(
            "reading jobs from stdin: one JSON object per line (JSON Lines); "
            "end with Ctrl-D (Ctrl-Z Enter on Windows)",
            markup=False,
        )
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
    err.print(f"put {plural(len(ids), 'job')}")


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
    """Count the jobs by state (``queue.counts()``; lease_expired is part of running)."""
    counts = _settings().queue().counts()
    if as_json:
        out.print(json.dumps(counts), markup=False)
        return
    table = Table(title=f"{_settings().db}.{_settings().collection}")
    table.add_column("state")
    table.add_column("jobs", justify="right")
    for name in ops.COUNT_KEYS:
        table.add_row(name, str(counts[name]))
    out.print(table)


def _jobs(state: str, limit: int) -> list[Job]:
    return _settings().queue().jobs(state, limit=limit)


#: ``--state``: a state of ``counts()`` or ``all``; the older names (available, locked,
#: expired) are still accepted.
STATE_OPTION = click.Choice([*ops.LIST_STATES, *ops.STATE_ALIASES])


def _list_state(ctx: click.Context, param: click.Parameter, value: str) -> str:
    return ops.list_state(value)


@cli.command(name="list")
@click.option("--state", type=STATE_OPTION, default="all", show_default=True, callback=_list_state)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON documents instead of a table.")
def list_jobs(state: str, limit: int, as_json: bool) -> None:
    """List jobs: failed first, then in claim order (priority, then the time each became due)."""
    queue = _settings().queue()
    jobs = _jobs(state, limit)
    if as_json:
        _print_json([job.data for job in jobs])
        return
    if not jobs:
        err.print(f"no {'' if state == 'all' else state + ' '}jobs")
        return
    now = queue.server_time()
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
            "" if job.locked_by is None else str(job.locked_by),
            job.key or "",
            _short(job.payload, width),
        )
    out.print(table)


@cli.command()
@click.option(
    "--state", type=STATE_OPTION, default="waiting", show_default=True, callback=_list_state
)
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
        out.print(f"requeued {plural(count, 'job')}")
        return 0
    ids = [parse_job_id(text) for text in job_ids]
    for text, job_id in zip(job_ids, ids, strict=True):
        if isinstance(job_id, str) and queue.get(job_id) is None:
            raise BadArgument(
                f"invalid id {text!r}: a job id is 24 hexadecimal digits, as `mongoqueue "
                "failed` shows them (nothing was requeued)"
            )
    count = 0
    for text, job_id in zip(job_ids, ids, strict=True):
        if queue.requeue(job_id) == 0:
            err.print(f"not requeued: {text} is not a failed job")
        else:
            count += 1
    out.print(f"requeued {plural(count, 'job')}")
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
            count = queue.counts()["total"]
            queue.clear()
    else:
        with err.status("deleting failed jobs"):
            count = queue.purge_failed()
    out.print(f"deleted {plural(count, 'job')}")


# --------------------------------------------------------------------------- worker


@cli.command()
@click.argument("handler")
@click.option(
    "-q",
    "--queue",
    "queues",
    multiple=True,
    help="For a task app (module:app): a queue to serve; repeat it, highest first "
    "[default: every queue with a task].",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Jobs run at once (threads; tasks for an async def handler).",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=0, max=1000),
    help="Claimed jobs kept ready beyond the free slots; 0: claim one per free slot "
    "[default: the concurrency].",
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
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
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
@click.option(
    "--metrics-password-env",
    metavar="VAR",
    help="Scrapes need HTTP basic auth with the password in environment variable VAR.",
)
@click.option(
    "--metrics-password-file",
    metavar="PATH",
    help="Scrapes need HTTP basic auth with the password in this file.",
)
@click.option(
    "--metrics-user", default=DEFAULT_USER, show_default=True, help="User name of scrapes."
)
@click.option(
    "--metrics-no-auth",
    is_flag=True,
    help="Serve metrics beyond loopback without authentication (you accept that anyone "
    "who reaches the port reads them).",
)
@click.option(
    "--metrics-depth",
    is_flag=True,
    help="Also export the queue's depth gauges (off: export depth from one place, the "
    "dashboard's /metrics, not from every worker).",
)
def worker(
    handler: str,
    queues: tuple[str, ...],
    concurrency: int,
    prefetch: int | None,
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
    metrics_password_env: str | None,
    metrics_password_file: str | None,
    metrics_user: str,
    metrics_no_auth: bool,
    metrics_depth: bool,
) -> int:
    """Run HANDLER (module:function) on each job; it is called with the Job.

    A coroutine function (async def) runs on asyncio with an AsyncJob
    (AsyncWorker), the others in threads (Worker); the options are the same.
    HANDLER may also be a task app (module:app, a mongoqueue App or AsyncApp):
    the worker runs every registered task of the --queue queues, on the app's
    own database and settings (--timeout, --max-attempts and the retry options
    are the app's then).

    Exit codes: 0 stopped as asked, 1 failed, 2 bad usage, 3 MongoDB
    unreachable, 4 metrics beyond loopback without authentication, 5 metrics
    port in use, 128+N second signal N.
    """
    metrics_auth = _basic_auth(metrics_user, metrics_password_env, metrics_password_file)
    if metrics_port is not None and not metrics_no_auth:
        require_auth(
            metrics_host,
            metrics_auth,
            "metrics",
            "Give --metrics-password-env VAR or --metrics-password-file PATH, or "
            "--metrics-no-auth to serve them to anyone.",
        )
    function = load_handler(handler)
    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    worker_options = {
        "concurrency": concurrency,
        "heartbeat": heartbeat,
        "hard_limit": hard_limit,
        "grace": grace,
        "burst": burst,
    }
    if is_app(function):
        if prefetch is not None:
            raise BadArgument("--prefetch is for a handler function, not a task app")
        return run_app_worker(
            function,
            list(queues),
            worker_options,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            metrics_auth=metrics_auth,
        )
    if queues:
        raise BadArgument("--queue is for a task app (module:app), not a handler function")
    prefetching = {} if prefetch is None else {"prefetch": prefetch}
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
            **prefetching,
        },
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        metrics_auth=metrics_auth,
        metrics_depth=metrics_depth,
    )


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


@cli.command()
@click.option("--queue", "queue_name", help="Only the workers of this collection.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def workers(queue_name: str | None, as_json: bool) -> None:
    """List the running workers of the database, alive or dead.

    Every worker registers itself while it runs and writes a heartbeat once
    per heartbeat interval; one silent for 3 intervals is dead (killed, or
    cut off from MongoDB): the jobs it holds come back when their leases expire.
    """
    settings = _settings()
    rows = read_workers(settings.client()[settings.db], queue_name)
    if as_json:
        _print_json([row.as_json() for row in rows])
        return
    if not rows:
        out.print(f"no workers registered in database {settings.db}", markup=False)
        return
    table = Table(title=f"workers in {settings.db}")
    for column in ("id", "host", "pid", "queues", "concurrency", "state", "heartbeat", "jobs"):
        table.add_column(column, justify="right" if column in ("pid", "concurrency") else "left")
    for row in rows:
        cells = (
            row.id,
            row.host,
            "" if row.pid is None else str(row.pid),
            ", ".join(row.queues),
            "" if row.concurrency is None else str(row.concurrency),
            row.state,
            _age(row.age),
            f"{len(row.jobs)}: {', '.join(str(j) for j in row.jobs[:3])}"
            + (" ..." if len(row.jobs) > 3 else "")
            if row.jobs
            else "0",
        )
        table.add_row(*(escape(cell) for cell in cells))  # ids and hosts are not markup
    out.print(table)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def schedules(as_json: bool) -> None:
    """List the periodic schedules of the database (declared by app workers).

    Shows each schedule's id, task, expression, timezone, next fire time, and the
    last tick's job with its state. A schedule removed from the code stops firing
    but stays listed here (with its old next fire time) until its document is deleted.
    """
    from .tasks.schedule_status import read_schedules

    settings = _settings()
    rows = read_schedules(settings.client()[settings.db])
    if as_json:
        _print_json([row.as_json() for row in rows])
        return
    if not rows:
        out.print(f"no schedules in database {settings.db}", markup=False)
        return
    table = Table(title=f"schedules in {settings.db}")
    columns = ("id", "task", "queue", "expression", "timezone", "next fire (UTC)")
    for column in (*columns, "last fired (UTC)", "last job", "state"):
        table.add_column(column)

    def when(value: Any) -> str:
        return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")

    for row in rows:
        cells = (
            row.id,
            row.task,
            row.queue,
            row.expression,
            row.timezone,
            when(row.next_fire_time),
            when(row.last_fire_time),
            "" if row.last_job_id is None else str(row.last_job_id),
            row.last_job_state,
        )
        table.add_row(*(escape(cell) for cell in cells))
    out.print(table)


# --------------------------------------------------------------------------- dashboard


def _basic_auth(user: str, env: str | None, file: str | None) -> BasicAuth | None:
    if env is not None and file is not None:
        raise click.UsageError("give the password's environment variable or its file, not both")
    if env is None and file is None:
        return None
    return BasicAuth(read_password(env=env, file=file), user)


@cli.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; any but loopback needs --password-env/--password-file "
    "or --trusted-proxy.",
)
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
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
)
@click.option(
    "--password-env",
    metavar="VAR",
    help="Require HTTP basic auth with the password in environment variable VAR.",
)
@click.option(
    "--password-file", metavar="PATH", help="Require HTTP basic auth with the password in PATH."
)
@click.option("--user", default=DEFAULT_USER, show_default=True, help="User name of basic auth.")
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    metavar="ADDRESS",
    help="Serve only requests from this authenticating proxy (IP or network; repeatable), "
    "which names the user in --proxy-user-header.",
)
@click.option(
    "--proxy-user-header",
    default="X-Forwarded-User",
    show_default=True,
    help="Header in which the trusted proxy names the authenticated user.",
)
@click.option("--root-path", default="", help="Path prefix the proxy serves the dashboard under.")
def dashboard(
    host: str,
    port: int,
    allow_actions: bool,
    sample_interval: float,
    window: float,
    log_level: str,
    password_env: str | None,
    password_file: str | None,
    user: str,
    trusted_proxies: tuple[str, ...],
    proxy_user_header: str,
    root_path: str,
) -> None:
    """Serve the web dashboard of the queues in --db (extra 'dashboard').

    Read-only unless --allow-actions. Also serves Prometheus depth gauges at /metrics.
    On an address other than loopback it needs an authentication setting: a
    password (HTTP basic) or a trusted proxy. Exit codes as the other commands,
    and 4 without authentication beyond loopback, 5 port in use.
    """
    auth: BasicAuth | TrustedProxy | None = _basic_auth(user, password_env, password_file)
    if trusted_proxies:
        if auth is not None:
            raise click.UsageError("give a password or --trusted-proxy, not both")
        auth = TrustedProxy(trusted_proxies, proxy_user_header)
    require_auth(
        host,
        auth,
        "the dashboard",
        "Set a password (--password-env VAR or --password-file PATH) or serve it behind "
        "an authenticating proxy (--trusted-proxy ADDRESS).",
    )
    settings = _settings()
    run = import_extra("mongoqueue.dashboard", "dashboard").run
    bind(host, port).close()  # a port in use is reported before anything else starts
    db = settings.client()[settings.db]
    with driver_errors():
        db.command("ping")
    shown = f"[{host}]" if ":" in host else host
    login = {BasicAuth: f", user {user}", TrustedProxy: ", through the trusted proxy"}
    note = login.get(type(auth), "") if auth is not None else ""
    err.print(
        f"mongoqueue dashboard: http://{shown}:{port}{root_path}/ (database {settings.db}{note})",
        markup=False,
    )
    run(
        db,
        host=host,
        port=port,
        allow_actions=allow_actions,
        sample_interval=sample_interval,
        window=window * 60,
        log_level=log_level,
        auth=auth,
        root_path=root_path,
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


# --------------------------------------------------------------------------- one job

cli.add_command(job_status)
cli.add_command(job_result)
cli.add_command(cancel_job)
cli.add_command(migrate_command)


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
