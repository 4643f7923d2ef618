"""The dashboard's web app: Starlette routes, Jinja templates, no JavaScript.

Pages (all GET): ``/`` the database's queues with counts by state;
``/queues/NAME`` one queue's counts and charts; ``/queues/NAME/jobs`` a list
per state with filters and paging; ``/queues/NAME/jobs/ID`` one job;
``/workers`` the registered workers, alive or dead; ``/metrics`` Prometheus
depth gauges of every queue and ``mongoqueue_up``.

Actions (POST only, and only when the app was made with ``allow_actions``):
requeue one failed job, requeue all failed, purge failed, cancel one waiting
job. Each form carries the session's CSRF token; a POST without the right one,
from another origin, or with actions off gets 403. Each action is the queue's
own atomic operation filtered on the state it names.

Everything from a job is rendered through Jinja's autoescape, and the pages
are served with a Content-Security-Policy that allows no script at all.

Who may look: with ``auth`` (a :class:`~mongoqueue.httpauth.BasicAuth` or
:class:`~mongoqueue.httpauth.TrustedProxy`) every page, ``/metrics`` and every
action needs it (401 otherwise; 403 for a request that does not come through the
trusted proxy); actions need the CSRF token on top. Without ``auth`` the app is
meant for loopback, or for mounting inside another Starlette or FastAPI
application under a path, behind that application's own authentication:
``Mount("/queues-admin", app=create_app(db))``; links and redirects follow the
mount path (``root_path``).
"""

from __future__ import annotations

import hmac
import os
import secrets
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pymongo.errors
from bson import ObjectId, json_util
from bson.errors import InvalidId
from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from pymongo.database import Database
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    SimpleUser,
)
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from .. import operations as ops
from ..errors import (
    DuplicateKeyConflict,
    InvalidArgument,
    MongoQueueError,
    QueueUnavailable,
    driver_errors,
)
from ..httpauth import BasicAuth, TrustedProxy
from ..metrics import DepthCollector, UpCollector
from ..presence import read_activity, read_workers
from ..queue import MongoQueue
from . import queries
from .charts import time_chart
from .history import History, Sampler, depth_series
from .observed import RATE_MINUTES, job_holders, rate_per_minute, throughput_series

__all__ = ["PAGE_SIZE", "Dashboard", "create_app", "find_queues", "is_queue"]

#: The server's code for "no such collection" (listIndexes on a dropped collection).
NAMESPACE_NOT_FOUND = 26

#: Jobs per page of a list.
PAGE_SIZE = 25
JSON_OPTIONS = json_util.JSONOptions(json_mode=json_util.JSONMode.RELAXED, tz_aware=True)
TEMPLATES = Path(__file__).with_name("templates")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # Not "no-referrer": with it Chromium sends "Origin: null" on our own forms.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


# --------------------------------------------------------------------------- queues


def is_queue(db: Database[Any], name: str) -> bool:
    """A collection holding mongoqueue jobs: it has our claim index (one listIndexes).

    Never a query on the collection's documents: a database's other collections
    may be large and unindexed. A queue gets its indexes on first use.
    """
    with driver_errors():
        try:
            names = {index["name"] for index in db[name].list_indexes()}
        except pymongo.errors.OperationFailure as exc:
            if exc.code == NAMESPACE_NOT_FOUND:
                return False
            raise
    return not names.isdisjoint(ops.CLAIM_INDEX_NAMES)


def find_queues(db: Database[Any]) -> list[str]:
    """The names of the database's queue collections, sorted."""
    names = db.list_collection_names(filter={"type": "collection"})
    return sorted(name for name in names if not name.startswith("system.") and is_queue(db, name))


def parse_job_id(text: str) -> Any:
    """An ObjectId when the text is one, else the text (ids put by others may be strings)."""
    try:
        return ObjectId(text)
    except (InvalidId, TypeError):
        return text


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def job_state(doc: dict[str, Any], now: datetime) -> str:
    """waiting, delayed, running, lease_expired (a running job), failed, completed or cancelled."""
    stored = doc.get("state")
    if stored in (ops.FAILED, *queries.KEPT_STATES):
        return str(stored)
    if isinstance(doc.get("lease_token"), str):
        expires = _utc(doc.get("lease_expires_at"))
        return "lease_expired" if expires is not None and expires <= now else "running"
    visible = _utc(doc.get("visible_at"))
    return "delayed" if visible is not None and visible > now else "waiting"


def to_json(value: Any, indent: int | None = 2) -> str:
    return json_util.dumps(value, json_options=JSON_OPTIONS, indent=indent)


def short(value: Any, width: int = 80) -> str:
    text = to_json(value, None)
    return text if len(text) <= width else text[: width - 1] + "…"


def last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def when(value: Any) -> str:
    at = _utc(value)
    return "" if at is None else at.strftime("%Y-%m-%d %H:%M:%S")


def age(value: Any, now: datetime) -> str:
    """``3 min``, ``2 h 5 min``, ``4 d 1 h``; ``—`` for no time."""
    at = _utc(value)
    if at is None:
        return "—"
    seconds = max(0, int((now - at).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if hours == 0:
        return f"{minutes} min"
    if days == 0:
        return f"{hours} h {minutes % 60} min"
    return f"{days} d {hours % 24} h"


def server_hosts(db: Database[Any]) -> str:
    """The servers the client was given, as ``host:port, ...`` (for the server-down page)."""
    hosts = db.client.topology_description.server_descriptions()
    return ", ".join(f"{host}:{port}" for host, port in hosts) or "the configured server"


# --------------------------------------------------------------------------- app


class Dashboard:
    """The state behind the app: the database, the queue objects, the sampled history."""

    def __init__(
        self,
        db: Database[Any],
        *,
        allow_actions: bool,
        sample_interval: float,
        window: float,
    ) -> None:
        self.db = db
        self.allow_actions = allow_actions
        self.window = window
        self._consumer = f"dashboard-{socket.gethostname()}-{os.getpid()}"
        self._queues: dict[str, MongoQueue] = {}
        self.history = History(window)
        self.sampler = Sampler(self.read_all, self.history, sample_interval)
        self.registry = CollectorRegistry()
        self.registry.register(DepthCollector(self.all_queues))
        self.registry.register(UpCollector(lambda: db.command("ping")))
        self._sampling = False
        self._sampling_lock = threading.Lock()

    def start_sampling(self) -> None:
        """Start the sampler once (from the lifespan, or the first page when mounted)."""
        with self._sampling_lock:
            if not self._sampling:
                self._sampling = True
                self.sampler.start()

    def stop_sampling(self) -> None:
        with self._sampling_lock:
            if self._sampling:
                self.sampler.stop()

    def queue(self, name: str) -> MongoQueue:
        if name not in self._queues:
            self._queues[name] = MongoQueue(self.db[name], self._consumer)
        return self._queues[name]

    def all_queues(self) -> list[MongoQueue]:
        with driver_errors():
            return [self.queue(name) for name in find_queues(self.db)]

    def read_all(self) -> dict[str, dict[str, int]]:
        return {queue.collection.name: queries.counts(queue) for queue in self.all_queues()}

    def existing_queue(self, name: str) -> MongoQueue:
        missing = HTTPException(404, f"no queue named {name!r} in database {self.db.name!r}")
        try:
            with driver_errors():
                if not is_queue(self.db, name):
                    raise missing
        except (InvalidArgument, pymongo.errors.InvalidName):  # a name MongoDB refuses: no queue
            raise missing from None
        return self.queue(name)


def _templates() -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.filters.update(json=to_json, short=short, last_line=last_line, when=when, age=age)
    return Jinja2Templates(env=env)


def create_app(
    db: Database[Any],
    *,
    allow_actions: bool = False,
    sample_interval: float = 5.0,
    window: float = 900.0,
    secret_key: str | None = None,
    auth: BasicAuth | TrustedProxy | None = None,
) -> Starlette:
    """The dashboard for the queues of ``db``. Actions are refused unless ``allow_actions``.

    ``auth`` guards every route (pages, ``/metrics``, actions). Without it, serve
    the app on loopback only, or mount it in an application that authenticates
    its users first.
    """
    dash = Dashboard(
        db, allow_actions=allow_actions, sample_interval=sample_interval, window=window
    )
    templates = _templates()

    def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        dash.start_sampling()  # a mounted app gets no lifespan of its own
        context.update(
            root=_root(request),
            actions=dash.allow_actions,
            csrf=_csrf_token(request) if dash.allow_actions else "",
            flash=request.session.pop("flash", None),
            db_name=dash.db.name,
        )
        response = templates.TemplateResponse(request, name, context, status_code=status)
        response.headers.update(SECURITY_HEADERS)
        return response

    # ---------------------------------------------------------------- pages

    def index(request: Request) -> Response:
        rows = []
        for queue in dash.all_queues():
            name = queue.collection.name
            rows.append(
                {
                    "name": name,
                    "counts": queries.counts(queue),
                    "rate": rate_per_minute(read_activity(dash.db, name, RATE_MINUTES + 1)),
                    "oldest": queries.oldest_waiting(queue),
                }
            )
        return render(
            request,
            "index.html",
            {"rows": rows, "now": datetime.now(timezone.utc), "rate_minutes": RATE_MINUTES},
        )

    def queue_page(request: Request) -> Response:
        name = request.path_params["name"]
        queue = dash.existing_queue(name)
        counts = queries.counts(queue)
        samples = dash.history.samples(name)
        end = time.time()
        start = end - dash.window
        done = throughput_series(read_activity(dash.db, name, max(1, round(dash.window / 60))))
        return render(
            request,
            "queue.html",
            {
                "name": name,
                "counts": counts,
                "oldest": queries.oldest_waiting(queue),
                "now": datetime.now(timezone.utc),
                "samples": len(samples),
                "last_total": samples[-1].counts["total"] if samples else "",
                "interval": dash.sampler.interval,
                "window_minutes": round(dash.window / 60),
                "done": done,
                "throughput": time_chart(
                    done.series, done.start, done.end, unit="completed", bars="completed"
                ),
                "depth": time_chart(depth_series(samples), start, end, unit="jobs"),
            },
        )

    def jobs_page(request: Request) -> Response:
        name = request.path_params["name"]
        queue = dash.existing_queue(name)
        params = request.query_params
        state = params.get("state") or "all"
        filters = queries.Filters(
            state=ops.STATE_ALIASES.get(state, state),  # the older names still work
            task=params.get("task", "").strip(),
            key=params.get("key", "").strip(),
            error=params.get("error", "").strip(),
            consumer=params.get("consumer", "").strip(),
            priority=_int_param(params.get("priority"), "priority", default=None),
        )
        after, before = params.get("after") or None, params.get("before") or None
        try:
            page = queries.list_jobs(queue, filters, after=after, before=before, limit=PAGE_SIZE)
        except queries.BadQuery as exc:
            raise HTTPException(400, str(exc)) from None
        kept = filters.query()

        def url(**cursor: str) -> str:
            return f"?{urlencode({**kept, **cursor})}"

        order = {
            "_id": "by id",
            "lease_expires_at": "by lease deadline, soonest first",
            "priority": "priority, then scheduled time (the claim order)",
        }[page.sort[0][0]]
        return render(
            request,
            "jobs.html",
            {
                "name": name,
                "page": page,
                "jobs": [(doc, job_state(doc, page.now)) for doc in page.jobs],
                "holders": job_holders(dash.db, page.jobs),
                "filters": filters,
                "states": queries.LIST_STATES,
                "matching": page.matching,
                "narrowed": filters.narrowed(),
                "limit": queries.COUNT_LIMIT,
                "order": order,
                "first": (after is None and before is None) or page.prev_cursor is None,
                "first_url": url(),
                "prev_url": url(before=page.prev_cursor) if page.prev_cursor else None,
                "next_url": url(after=page.next_cursor) if page.next_cursor else None,
            },
        )

    def job_page(request: Request) -> Response:
        name = request.path_params["name"]
        queue = dash.existing_queue(name)
        job_id = parse_job_id(request.path_params["job_id"])
        with driver_errors():
            job = queue.get(job_id)
        if job is None:
            raise HTTPException(
                404, f"no job {job_id} in {name}: completed and deleted, cancelled, or purged"
            )
        doc = job.data
        now = queue.server_time()
        state = job_state(doc, now)
        return render(
            request,
            "job.html",
            {
                "name": name,
                "job": doc,
                "job_id": str(job_id),
                "state": state,
                "lease_expired": state == "lease_expired",
                "holder": job_holders(dash.db, [doc]).get(doc["_id"]),
                "kept": ops.ATTEMPTS_KEPT,
                "error_chars": ops.ATTEMPT_ERROR_CHARS,
            },
        )

    def workers_page(request: Request) -> Response:
        return render(request, "workers.html", {"workers": read_workers(dash.db)})

    # ---------------------------------------------------------------- confirmations

    def confirm_page(
        ask: Callable[[Request, MongoQueue], tuple[str, str, str]],
    ) -> Callable[[Request], Response]:
        """The GET of an action: a page asking to confirm it, whose form POSTs it."""

        def endpoint(request: Request) -> Response:
            if not dash.allow_actions:
                raise HTTPException(
                    403, "actions are off: start the dashboard with --allow-actions"
                )
            name = request.path_params["name"]
            queue = dash.existing_queue(name)
            question, consequence, button = ask(request, queue)
            back = request.query_params.get("back", "")
            if not _local_path(back):
                back = f"{_root(request)}/queues/{name}"
            return render(
                request,
                "confirm.html",
                {
                    "name": name,
                    "question": question,
                    "consequence": consequence,
                    "button": button,
                    "back": back,
                },
            )

        return endpoint

    def ask_purge(request: Request, queue: MongoQueue) -> tuple[str, str, str]:
        failed = queries.counts(queue)["failed"]
        return (
            f"Purge {_jobs(failed)}?",
            f"This deletes every failed job of {queue.collection.name} ({failed} now, and any that "
            "fail before you confirm) with its payload and error. It cannot be undone.",
            f"Yes, delete {_jobs(failed)}",
        )

    def ask_requeue_all(request: Request, queue: MongoQueue) -> tuple[str, str, str]:
        failed = queries.counts(queue)["failed"]
        return (
            f"Requeue {_jobs(failed)}?",
            f"Every failed job of {queue.collection.name} ({failed} now) goes back to waiting with "
            "its attempt count reset to 0, and workers will run it again.",
            f"Yes, requeue {_jobs(failed)}",
        )

    def ask_cancel(request: Request, queue: MongoQueue) -> tuple[str, str, str]:
        job_id = parse_job_id(request.path_params["job_id"])
        return (
            f"Cancel job {job_id}?",
            "A waiting or delayed job is deleted; a running job's worker is asked to stop it at "
            "its next heartbeat. It cannot be undone.",
            "Yes, cancel this job",
        )

    def metrics(request: Request) -> Response:
        return Response(generate_latest(dash.registry), media_type=CONTENT_TYPE_LATEST)

    # ---------------------------------------------------------------- actions

    def action(
        work: Callable[[Request, MongoQueue], str],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if not dash.allow_actions:
                raise HTTPException(
                    403, "actions are off: start the dashboard with --allow-actions"
                )
            _check_origin(request)
            form = await request.form()
            sent = form.get("csrf")
            expected = request.session.get("csrf")
            if (
                not isinstance(sent, str)
                or not isinstance(expected, str)
                or not hmac.compare_digest(sent.encode(), expected.encode())
            ):
                raise HTTPException(403, "missing or wrong CSRF token: reload the page and retry")
            name = request.path_params["name"]
            queue = await run_in_threadpool(dash.existing_queue, name)
            message = await run_in_threadpool(work, request, queue)
            failed = message.startswith("not ")
            request.session["flash"] = {"kind": "error" if failed else "ok", "text": message}
            back = form.get("back")
            default = f"{_root(request)}/queues/{name}"
            target = back if isinstance(back, str) and _local_path(back) else default
            return RedirectResponse(target, status_code=303)

        return endpoint

    def requeue_failed(request: Request, queue: MongoQueue) -> str:
        return f"requeued {_jobs(queue.requeue())}"

    def purge_failed(request: Request, queue: MongoQueue) -> str:
        return f"deleted {_jobs(queue.purge_failed())}"

    def requeue_one(request: Request, queue: MongoQueue) -> str:
        job_id = parse_job_id(request.path_params["job_id"])
        try:
            done = queue.requeue(job_id)
        except DuplicateKeyConflict as exc:
            return f"not requeued: {exc}"
        return f"requeued job {job_id}" if done else f"not requeued: job {job_id} is not failed"

    def cancel_one(request: Request, queue: MongoQueue) -> str:
        job_id = parse_job_id(request.path_params["job_id"])
        done = queue.request_cancel(job_id)
        if done == "cancelled":
            return f"cancelled job {job_id}"
        if done == "requested":
            return f"asked the worker running job {job_id} to cancel it (at its next heartbeat)"
        return f"not cancelled: job {job_id} is not waiting or running (failed, finished or gone)"

    # ---------------------------------------------------------------- errors

    async def http_error(request: Request, exc: Exception, title: str = "") -> Response:
        assert isinstance(exc, HTTPException)
        titles = {400: "Bad request", 403: "Not allowed", 404: "Not found", 405: "Not allowed"}
        title = title or f"{exc.status_code} {titles.get(exc.status_code, 'Error')}"
        response = HTMLResponse(
            templates.get_template("error.html").render(
                status=exc.status_code, title=title, detail=exc.detail, root=_root(request)
            ),
            status_code=exc.status_code,
            headers=exc.headers,
        )
        response.headers.update(SECURITY_HEADERS)
        return response

    async def queue_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, (QueueUnavailable, pymongo.errors.ConnectionFailure)):
            detail = (
                f"The dashboard cannot reach MongoDB at {server_hosts(dash.db)}: "
                "check that the server is running, then reload this page."
            )
            return await http_error(request, HTTPException(503, detail), "MongoDB is unreachable")
        reason = (
            exc.details.get("errmsg")
            if isinstance(exc, pymongo.errors.OperationFailure) and exc.details
            else None
        )
        detail = f"MongoDB refused the request: {last_line(reason or str(exc))}"
        return await http_error(request, HTTPException(500, detail), "MongoDB error")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        dash.start_sampling()
        try:
            yield
        finally:
            dash.stop_sampling()

    routes = [
        Route("/", index),
        Route("/metrics", metrics),
        Route("/workers", workers_page),
        Route("/queues/{name}", queue_page),
        Route("/queues/{name}/jobs", jobs_page),
        Route("/queues/{name}/jobs/{job_id}", job_page),
        Route("/queues/{name}/requeue-failed", action(requeue_failed), methods=["POST"]),
        Route("/queues/{name}/requeue-failed", confirm_page(ask_requeue_all), methods=["GET"]),
        Route("/queues/{name}/purge-failed", action(purge_failed), methods=["POST"]),
        Route("/queues/{name}/purge-failed", confirm_page(ask_purge), methods=["GET"]),
        Route("/queues/{name}/jobs/{job_id}/requeue", action(requeue_one), methods=["POST"]),
        Route("/queues/{name}/jobs/{job_id}/cancel", action(cancel_one), methods=["POST"]),
        Route("/queues/{name}/jobs/{job_id}/cancel", confirm_page(ask_cancel), methods=["GET"]),
    ]
    middleware = [] if auth is None else [_auth_middleware(auth)]
    app = Starlette(
        routes=routes,
        middleware=[
            *middleware,
            Middleware(
                SessionMiddleware,
                secret_key=secret_key or secrets.token_hex(32),
                session_cookie="mongoqueue_dashboard",
                same_site="strict",
            ),
        ],
        exception_handlers={
            HTTPException: http_error,
            MongoQueueError: queue_error,
            pymongo.errors.PyMongoError: queue_error,
        },
        lifespan=lifespan,
    )
    app.state.dashboard = dash
    return app


class _Refused(AuthenticationError):
    def __init__(self, status: int, message: str, challenge: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.challenge = challenge


class _AuthBackend(AuthenticationBackend):
    """Starlette's authentication backend for a :class:`BasicAuth` or :class:`TrustedProxy`."""

    def __init__(self, auth: BasicAuth | TrustedProxy) -> None:
        self.auth = auth

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser]:
        auth = self.auth
        if isinstance(auth, BasicAuth):
            if not auth.check(conn.headers.get("authorization")):
                raise _Refused(401, "authentication required", auth.challenge)
            return AuthCredentials(["authenticated"]), SimpleUser(auth.user)
        peer = conn.client.host if conn.client is not None else None
        if not auth.trusts(peer):
            raise _Refused(403, "this dashboard is served through its authenticating proxy only")
        user = conn.headers.get(auth.user_header)
        if not user:
            raise _Refused(401, f"the proxy sent no {auth.user_header} header")
        return AuthCredentials(["authenticated"]), SimpleUser(user)


def _auth_middleware(auth: BasicAuth | TrustedProxy) -> Middleware:
    def refused(conn: HTTPConnection, exc: Exception) -> Response:
        status, challenge = 401, None
        if isinstance(exc, _Refused):
            status, challenge = exc.status, exc.challenge
        headers = dict(SECURITY_HEADERS)
        if challenge is not None:
            headers["WWW-Authenticate"] = challenge
        return PlainTextResponse(f"{status}: {exc}\n", status_code=status, headers=headers)

    return Middleware(AuthenticationMiddleware, backend=_AuthBackend(auth), on_error=refused)


def _jobs(count: int) -> str:
    """``1 failed job``, ``2 failed jobs``."""
    return f"{count} failed job{'' if count == 1 else 's'}"


def _root(request: Request) -> str:
    """The path the app is mounted under ('' at the root of the server)."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


def _csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def _check_origin(request: Request) -> None:
    """Refuse a POST whose Origin (when the browser sends one) is not this server."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    if origin == "null" or urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, "cross-origin request refused")


def _local_path(target: str) -> bool:
    """A path on this server (no scheme, host or protocol-relative ``//``)."""
    parts = urlsplit(target)
    return (
        target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and not parts.netloc
    )


def _int_param(text: str | None, name: str, *, default: Any, minimum: int | None = None) -> Any:
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise HTTPException(400, f"{name} must be a whole number, got {text!r}") from None
    if minimum is not None and value < minimum:
        raise HTTPException(400, f"{name} must be at least {minimum}, got {value}")
    return value
