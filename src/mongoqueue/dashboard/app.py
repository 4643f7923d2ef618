"""The dashboard's web app: Starlette routes, Jinja templates, no JavaScript.

Pages (all GET): ``/`` the database's queues with counts by state;
``/queues/NAME`` one queue's counts and charts; ``/queues/NAME/jobs`` a list
per state with filters and paging; ``/queues/NAME/jobs/ID`` one job;
``/metrics`` Prometheus depth gauges of every queue.

Actions (POST only, and only when the app was made with ``allow_actions``):
requeue one failed job, requeue all failed, purge failed, cancel one waiting
job. Each form carries the session's CSRF token; a POST without the right one,
from another origin, or with actions off gets 403. Each action is the queue's
own atomic operation filtered on the state it names.

Everything from a job is rendered through Jinja's autoescape, and the pages
are served with a Content-Security-Policy that allows no script at all.
"""

from __future__ import annotations

import hmac
import os
import secrets
import socket
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
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from .. import operations as ops
from ..errors import DuplicateKeyConflict, InvalidArgument, MongoQueueError, driver_errors
from ..metrics import DepthCollector
from ..queue import MongoQueue
from .history import History, Sampler, bar_chart, line_chart

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
    """available, delayed, running or failed, as ``stats()`` counts the job."""
    if doc.get("state") == ops.FAILED:
        return "failed"
    if isinstance(doc.get("lease_token"), str):
        return "running"
    visible = _utc(doc.get("visible_at"))
    return "delayed" if visible is not None and visible > now else "available"


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

    def queue(self, name: str) -> MongoQueue:
        if name not in self._queues:
            self._queues[name] = MongoQueue(self.db[name], self._consumer)
        return self._queues[name]

    def all_queues(self) -> list[MongoQueue]:
        with driver_errors():
            return [self.queue(name) for name in find_queues(self.db)]

    def read_all(self) -> dict[str, dict[str, int]]:
        return {queue.collection.name: queue.stats() for queue in self.all_queues()}

    def existing_queue(self, name: str) -> MongoQueue:
        with driver_errors():
            if not is_queue(self.db, name):
                raise HTTPException(404, f"no queue named {name!r} in database {self.db.name!r}")
        return self.queue(name)


def _templates() -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.filters.update(json=to_json, short=short, last_line=last_line, when=when)
    return Jinja2Templates(env=env)


def create_app(
    db: Database[Any],
    *,
    allow_actions: bool = False,
    sample_interval: float = 5.0,
    window: float = 900.0,
    secret_key: str | None = None,
) -> Starlette:
    """The dashboard for the queues of ``db``. Actions are refused unless ``allow_actions``."""
    dash = Dashboard(
        db, allow_actions=allow_actions, sample_interval=sample_interval, window=window
    )
    templates = _templates()

    def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        context.update(
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
            with driver_errors():
                rows.append((queue.collection.name, queue.stats()))
        return render(request, "index.html", {"rows": rows})

    def queue_page(request: Request) -> Response:
        name = request.path_params["name"]
        queue = dash.existing_queue(name)
        counts = queue.stats()
        samples = dash.history.samples(name)
        now = time.monotonic()
        return render(
            request,
            "queue.html",
            {
                "name": name,
                "counts": counts,
                "samples": len(samples),
                "last_total": samples[-1].counts["total"] if samples else "",
                "interval": dash.sampler.interval,
                "window_minutes": round(dash.window / 60),
                "bars": bar_chart(samples, dash.window, now),
                "lines": line_chart(samples, dash.window, now),
            },
        )

    def jobs_page(request: Request) -> Response:
        name = request.path_params["name"]
        queue = dash.existing_queue(name)
        params = request.query_params
        state = params.get("state", "all")
        if state not in (*ops.LIST_STATES, *ops.STATE_ALIASES):
            raise HTTPException(400, f"state must be one of {', '.join(ops.LIST_STATES)}")
        after = params.get("after") or None
        priority = _int_param(params.get("priority"), "priority", default=None)
        key = params.get("key") or None
        consumer = params.get("consumer") or None
        try:
            jobs = queue.jobs(
                state,
                key=key,
                locked_by=consumer,
                priority=priority,
                limit=PAGE_SIZE + 1,
                after=after,
            )
        except InvalidArgument as exc:
            raise HTTPException(400, str(exc)) from exc
        now = queue.server_time()
        more = len(jobs) > PAGE_SIZE
        docs = [job.data for job in jobs[:PAGE_SIZE]]
        filters = {"state": state, "key": key or "", "consumer": consumer or ""}
        filters["priority"] = "" if priority is None else str(priority)
        kept = {k: v for k, v in filters.items() if v}

        return render(
            request,
            "jobs.html",
            {
                "name": name,
                "jobs": [(doc, job_state(doc, now)) for doc in docs],
                "filters": filters,
                "states": ops.LIST_STATES,
                "shown": len(docs),
                "first_url": f"?{urlencode(kept)}" if after else None,
                "next_url": (
                    f"?{urlencode({**kept, 'after': ops.listing_cursor(docs[-1])})}"
                    if more
                    else None
                ),
            },
        )

    def job_page(request: Request) -> Response:
        name = request.path_params["name"]
        queue = dash.existing_queue(name)
        job_id = parse_job_id(request.path_params["job_id"])
        with driver_errors():
            job = queue.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id} in {name} (completed, cancelled or purged)")
        doc = job.data
        now = queue.server_time()
        expires = _utc(doc.get("lease_expires_at"))
        return render(
            request,
            "job.html",
            {
                "name": name,
                "job": doc,
                "job_id": str(job_id),
                "state": job_state(doc, now),
                "lease_expired": expires is not None and expires <= now,
            },
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
            request.session["flash"] = message
            back = form.get("back")
            target = back if isinstance(back, str) and _local_path(back) else f"/queues/{name}"
            return RedirectResponse(target, status_code=303)

        return endpoint

    def requeue_failed(request: Request, queue: MongoQueue) -> str:
        return f"requeued {queue.requeue()} failed jobs"

    def purge_failed(request: Request, queue: MongoQueue) -> str:
        return f"deleted {queue.purge_failed()} failed jobs"

    def requeue_one(request: Request, queue: MongoQueue) -> str:
        job_id = parse_job_id(request.path_params["job_id"])
        try:
            done = queue.requeue(job_id)
        except DuplicateKeyConflict as exc:
            return f"not requeued: {exc}"
        return f"requeued job {job_id}" if done else f"not requeued: job {job_id} is not failed"

    def cancel_one(request: Request, queue: MongoQueue) -> str:
        job_id = parse_job_id(request.path_params["job_id"])
        if queue.cancel(job_id):
            return f"cancelled job {job_id}"
        return f"not cancelled: job {job_id} is not waiting (running, failed or gone)"

    # ---------------------------------------------------------------- errors

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        response = HTMLResponse(
            templates.get_template("error.html").render(status=exc.status_code, detail=exc.detail),
            status_code=exc.status_code,
            headers=exc.headers,
        )
        response.headers.update(SECURITY_HEADERS)
        return response

    async def queue_error(request: Request, exc: Exception) -> Response:
        return await http_error(request, HTTPException(503, f"MongoDB: {exc}"))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        dash.sampler.start()
        try:
            yield
        finally:
            dash.sampler.stop()

    routes = [
        Route("/", index),
        Route("/metrics", metrics),
        Route("/queues/{name}", queue_page),
        Route("/queues/{name}/jobs", jobs_page),
        Route("/queues/{name}/jobs/{job_id}", job_page),
        Route("/queues/{name}/requeue-failed", action(requeue_failed), methods=["POST"]),
        Route("/queues/{name}/purge-failed", action(purge_failed), methods=["POST"]),
        Route("/queues/{name}/jobs/{job_id}/requeue", action(requeue_one), methods=["POST"]),
        Route("/queues/{name}/jobs/{job_id}/cancel", action(cancel_one), methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                SessionMiddleware,
                secret_key=secret_key or secrets.token_hex(32),
                session_cookie="mongoqueue_dashboard",
                same_site="strict",
            )
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
