"""What the dashboard reads from a queue: counts, the oldest waiting job, and job lists.

Every read the pages make goes through the three functions here (:func:`counts`,
:func:`oldest_waiting`, :func:`list_jobs`), so a public listing API of the queue
can replace them in one place.

Lists are paged by **keyset**, never ``skip()``: a page is "the next 25 jobs after
this one in the list's order", and the order is one an index serves:

=============================  ==========================================  =========================
state                          order                                       index
=============================  ==========================================  =========================
waiting, delayed, failed,      claim order: priority (high first), when    ``mongoqueue_claim_v2``
completed, cancelled           it became due (``visible_at``), ``_id``     (``state`` equality, then
                                                                           the sort)
running, lease_expired         lease deadline, ``_id``                     ``mongoqueue_lease``
                                                                           (held jobs only)
all                            ``_id``                                     ``_id``
=============================  ==========================================  =========================

So page 1,000 costs what page 1 does. The cursor in the URL is the sort key of
the last (or first) job shown, and a page is at most three simple range queries
that start the index walk at the cursor (see :func:`keyset_queries`). Running jobs
(few: one per held lease) are sorted from the lease index.

The error-text filter is a case-insensitive substring match on ``last_error``,
which no index can serve: it examines the jobs of the chosen state in list order
until it has a page, and is bounded by ``ERROR_SEARCH_MS`` of server time
(``maxTimeMS``) per page; the page says so when the limit stops it. The task and
holder filters are not indexed either and have the same bound. Counts stop at
``COUNT_LIMIT + 1``.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pymongo.errors
from bson import json_util

from .. import operations as ops
from ..errors import driver_errors
from ..queue import MongoQueue

__all__ = [
    "COUNT_KEYS",
    "ERROR_SEARCH_MS",
    "LIST_STATES",
    "BadQuery",
    "Filters",
    "Page",
    "counts",
    "list_jobs",
    "oldest_waiting",
]

#: The counts every page shows, in the shared vocabulary (``lease_expired`` is part of running).
COUNT_KEYS = (
    "waiting",
    "delayed",
    "running",
    "lease_expired",
    "failed",
    "completed",
    "cancelled",
    "total",
)
#: States a list can show.
LIST_STATES = (
    "waiting",
    "delayed",
    "running",
    "lease_expired",
    "failed",
    "completed",
    "cancelled",
    "all",
)
#: Stored states the task layer keeps jobs in after they end.
KEPT_STATES = ("completed", "cancelled")
#: Server time the error-text filter may take per page.
ERROR_SEARCH_MS = 2000
#: Longest error text one can search for.
ERROR_TEXT_MAX = 200
#: Beyond this many matches a list says "more than" (a count stops there: bounded cost).
COUNT_LIMIT = 1000
#: Priorities looked at to find the oldest waiting job (one indexed query each).
PRIORITIES_LOOKED_AT = 50

_JSON = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL, tz_aware=True)


class BadQuery(ValueError):
    """A filter or cursor in the URL that cannot be used (the page answers 400)."""


def counts(queue: MongoQueue) -> dict[str, int]:
    """Jobs by state in the shared vocabulary (``COUNT_KEYS``): ``queue.counts()``, the one
    place the pages and the sampler read counts from."""
    found = queue.counts()
    return {key: int(found.get(key, 0)) for key in COUNT_KEYS}


def oldest_waiting(queue: MongoQueue) -> datetime | None:
    """When the waiting job that has been due longest became due, or None when none waits.

    One indexed query per priority in use (the claim index gives each priority's
    jobs in the order they became due, ``visible_at``), never a scan of the queue.
    """
    now = queue.server_time()
    waiting = ops.state_filter("available", now)
    with driver_errors():
        priorities = queue.collection.distinct("priority", {"state": ops.READY})
        oldest: datetime | None = None
        for priority in sorted(priorities, reverse=True)[:PRIORITIES_LOOKED_AT]:
            doc = queue.collection.find_one(
                {**waiting, "priority": priority},
                {"visible_at": 1},
                sort=[("visible_at", 1), ("_id", 1)],
            )
            at = _utc(doc.get("visible_at")) if doc else None
            if at is not None and (oldest is None or at < oldest):
                oldest = at
    return oldest


@dataclass(frozen=True)
class Filters:
    """What a list shows: a state and exact or bounded filters (empty = not filtered)."""

    state: str = "all"
    task: str = ""
    key: str = ""
    error: str = ""
    consumer: str = ""
    priority: int | None = None

    def narrowed(self) -> bool:
        """Anything beyond the state."""
        return bool(self.task or self.key or self.error or self.consumer) or (
            self.priority is not None
        )

    def query(self) -> dict[str, str]:
        """The URL parameters that give these filters back (empty ones left out)."""
        values = {
            "state": self.state,
            "task": self.task,
            "key": self.key,
            "error": self.error,
            "consumer": self.consumer,
            "priority": "" if self.priority is None else str(self.priority),
        }
        return {name: value for name, value in values.items() if value}


@dataclass
class Page:
    jobs: list[dict[str, Any]]
    now: datetime
    next_cursor: str | None = None  # "after" the last job shown
    prev_cursor: str | None = None  # "before" the first job shown
    matching: int | None = None  # how many match, up to COUNT_LIMIT + 1 (None: not counted)
    stopped: str = ""  # why the list may be incomplete (error search time limit)
    sort: list[tuple[str, int]] = field(default_factory=list)


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _state_filter(state: str, now: datetime) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    claim = [(name, int(direction)) for name, direction in ops.CLAIM_SORT]
    by_deadline = [("lease_expires_at", 1), ("_id", 1)]
    if state == "waiting":
        return ops.state_filter("available", now), claim
    if state in ("delayed", "failed"):
        return ops.state_filter(state, now), claim
    if state == "running":
        return {**ops.state_filter("running", now), "lease_expires_at": {"$type": "date"}}, (
            by_deadline
        )
    if state == "lease_expired":
        return dict(ops.expired_filter(now)), by_deadline
    if state in KEPT_STATES:
        return {"state": state}, claim
    if state == "all":
        return {}, [("_id", 1)]
    raise BadQuery(f"state must be one of {', '.join(LIST_STATES)}, got {state!r}")


def _keyset(sort: list[tuple[str, int]], values: list[Any], forward: bool) -> dict[str, Any]:
    """Jobs strictly after (``forward``) or before ``values`` in the ``sort`` order."""
    clauses = []
    for i, (name, direction) in enumerate(sort):
        op = "$gt" if (direction == 1) == forward else "$lt"
        equal = {sort[j][0]: values[j] for j in range(i)}
        clauses.append({**equal, name: {op: values[i]}})
    return {"$or": clauses}


def encode_cursor(doc: dict[str, Any], sort: list[tuple[str, int]]) -> str:
    values = [doc.get(name) for name, _ in sort]
    text = json_util.dumps(values, json_options=_JSON)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: list[tuple[str, int]]) -> list[Any]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        values = json_util.loads(text, json_options=_JSON)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadQuery("the page cursor is not one this dashboard made: start again") from exc
    if not isinstance(values, list) or len(values) != len(sort):
        raise BadQuery("the page cursor does not fit this list: start again from the first page")
    return values


def job_filter(filters: Filters, now: datetime) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """The MongoDB filter and sort of a list (without its page cursor)."""
    query, sort = _state_filter(filters.state, now)
    query = dict(query)
    if filters.task:
        query["payload.task"] = filters.task
    if filters.key:
        query["key"] = filters.key
    if filters.consumer:
        query["locked_by"] = filters.consumer
    if filters.priority is not None:
        query["priority"] = filters.priority
    if filters.error:
        if len(filters.error) > ERROR_TEXT_MAX:
            raise BadQuery(f"the error text to search is at most {ERROR_TEXT_MAX} characters")
        query["last_error"] = {"$regex": re.escape(filters.error), "$options": "i"}
    return query, sort


_LEASE_INDEX = ops.LEASE_INDEX.document["name"]


def keyset_queries(
    base: dict[str, Any], sort: list[tuple[str, int]], values: list[Any] | None, forward: bool
) -> list[dict[str, Any]]:
    """The finds of one page, run in turn until the page is full.

    Without a cursor, just ``base``. With one, the jobs after it in ``sort`` order
    are split into simple ranges, nearest first: for the claim order, the rest of
    the cursor's (priority, scheduled time) by ``_id``, then the rest of its priority
    by scheduled time, then the lower priorities. Each is equalities followed by one
    range on the next field of the index, so the server walks the index from the
    cursor, not from the start (no ``$or``, whose planning varies, and no ``skip``).
    """
    if values is None:
        return [base]
    return [{"$and": [base, clause]} for clause in reversed(_keyset(sort, values, forward)["$or"])]


def list_jobs(
    queue: MongoQueue,
    filters: Filters,
    *,
    after: str | None = None,
    before: str | None = None,
    limit: int = 25,
) -> Page:
    """One page of a list: ``limit`` jobs after the ``after`` cursor (or before ``before``)."""
    now = queue.server_time()
    base, sort = job_filter(filters, now)
    forward = before is None
    cursor = after if forward else before
    values = decode_cursor(cursor, sort) if cursor else None
    order = sort if forward else [(name, -direction) for name, direction in sort]
    page = Page([], now, sort=sort)
    options: dict[str, Any] = {}
    if sort[0][0] == "lease_expires_at":
        options["hint"] = _LEASE_INDEX  # held jobs only: a few, sorted after the walk
    if filters.error or filters.task or filters.consumer:
        options["max_time_ms"] = ERROR_SEARCH_MS
    try:
        with driver_errors():
            docs: list[dict[str, Any]] = []
            for query in keyset_queries(base, sort, values, forward):
                wanted = limit + 1 - len(docs)
                docs += queue.collection.find(query, sort=order, limit=wanted, **options)
                if len(docs) > limit:
                    break
            if not filters.error:
                bounded = {"maxTimeMS": options["max_time_ms"]} if "max_time_ms" in options else {}
                page.matching = queue.collection.count_documents(
                    base, limit=COUNT_LIMIT + 1, **bounded
                )
    except pymongo.errors.ExecutionTimeout:
        page.stopped = (
            f"The search stopped after {ERROR_SEARCH_MS / 1000:g} s of server time without "
            "filling a page (task, holder and error-text filters are not indexed); narrow it "
            "with a state, key or priority."
        )
        return page
    more = len(docs) > limit
    docs = docs[:limit]
    if not forward:
        docs.reverse()
    page.jobs = docs
    if docs:
        if more or not forward:
            page.next_cursor = encode_cursor(docs[-1], sort)
        if cursor and (more or forward):
            page.prev_cursor = encode_cursor(docs[0], sort)
    elif not forward and cursor:
        page.next_cursor = cursor
    return page
