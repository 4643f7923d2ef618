"""The storage contract of a job: every filter, update, pipeline and index of the queue.

Pure functions with no I/O: the queue classes send what these return, and unit
tests check the documents without a server.

A job is one document::

    _id               ObjectId   made by the producer
    payload           document   exactly what was put, apart from queue metadata
    state             "ready"    in the queue: waiting, delayed, or held by a consumer
                      "failed"   reached max_attempts; never delivered again until requeued
    priority          int        higher first
    scheduled_at      date       when the job first became deliverable: run_at, put time plus
                                 delay, or (due at once) a lower bound of the server's time
                                 at put
    visible_at        date       a ready job may be claimed once the server's clock reaches
                                 it: its scheduled time, the end of a retry backoff, or the
                                 end of the current lease; among equal priority, claims
                                 take the earliest visible_at first, then the lowest _id
    attempts          int        failed deliveries so far (error() or an expired lease)
    max_attempts      int        (optional) this job's own limit instead of the queue's
    retry             document   (optional) this job's own RetryPolicy, in milliseconds
    key               str        (optional) deduplication key, unique among ready jobs
    lease_token       str|null   fencing token of the current claim; null when not held
    locked_by         str|int|null  consumer_id of the holder
    locked_at         date|null  when the current claim was made
    lease_expires_at  date|null  end of the current lease (equal to visible_at while held)
    progress          int|null   last progress() count
    last_error        str|null   message of the last failure
    attempts_log      array      (optional) the last ATTEMPTS_KEPT failed deliveries, oldest
                                 first: {attempt, at, worker, error}, each error cut to
                                 ATTEMPT_ERROR_CHARS characters (written by error() and by
                                 lease expiry; the dashboard's attempt history)
    created_at        date       when put() ran

Kept jobs (the task layer; a raw ``complete()`` deletes the job instead)::

    state             "completed" finished with a result, kept until expire_at
                      "cancelled" cancelled (waiting, or running after a cancel request)
    result            any        (completed) the value the task returned
    finished_at       date       (completed/cancelled) server time of the final update
    expire_at         date       removed by the TTL index ``mongoqueue_expire`` after it
    cancel_requested  bool       (optional) set on a running job by ``request_cancel``;
                                 its holder sees it in the reply of its next heartbeat
    passes            int        (optional) deliveries released because the consumer had
                                 no handler for the job's task
    txn_session       document   (optional) lsid of the session whose transaction runs a
                                 transactional task; the next holder kills it first

Every state change is one atomic operation whose filter names the state it
expects: a claim filters on ``state`` and ``visible_at``; ``complete``, ``error``,
``progress`` and ``release`` filter on ``_id`` *and* ``lease_token``, so a handle
whose lease was taken over matches nothing.

All times written by updates come from the server's clock (``$$NOW``). Filters
need a literal time; the queue passes its estimate of the server's clock (see
:mod:`mongoqueue.clock`).

User-supplied strings are wrapped in ``$literal`` inside pipelines: a consumer id
or error message that starts with ``$`` must never be read as a field path.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from bson import ObjectId, json_util
from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING, DESCENDING, DeleteOne, IndexModel, UpdateOne

from .errors import InvalidArgument
from .retry import RetryPolicy

__all__ = [
    "CLAIM_INDEX_NAMES",
    "CLAIM_SORT",
    "INDEXES",
    "acknowledge_writes",
    "after_filter",
    "backoff_ms",
    "cancel_filter",
    "claim_filter",
    "claim_update",
    "complete_writes",
    "count_filters",
    "count_hint",
    "counts_from",
    "expired_filter",
    "fail_update",
    "heartbeat_update",
    "held",
    "ids_filter",
    "indexes",
    "listing_cursor",
    "listing_filter",
    "new_job",
    "prefetched_unless",
    "progress_update",
    "release_update",
    "requeue_filter",
    "requeue_update",
    "requeue_writes",
    "start_update",
    "start_writes",
    "state_filter",
    "stats_filters",
    "stats_from",
]

Doc = dict[str, Any]
Pipeline = list[Doc]

READY = "ready"
FAILED = "failed"
#: Stored states of jobs the task layer keeps after they finish (raw queues delete them).
COMPLETED = "completed"
CANCELLED = "cancelled"

# --------------------------------------------------------------------------- indexes
#
# The claim index orders jobs by eligibility: ``state`` is matched by equality,
# then ``priority`` (highest first), then ``visible_at`` (the time the job became
# or becomes claimable), then ``_id``. The claim's sort is the index's order after
# ``state``, so mongod reads it from the index (one IXSCAN, no SORT stage), and its
# range on ``visible_at`` is checked on the keys: within one priority the first key
# past ``now`` ends that priority's run and the scan seeks to the next priority.
# Held jobs (``visible_at`` = end of lease), jobs backing off and delayed jobs all
# sort *after* every due job of their priority, so a claim examines about one key
# per distinct priority in use plus the key it claims, however many jobs are held,
# backing off or delayed (see bench/: 1000 held jobs ahead of a due one cost 2
# keys, where the previous index, sorted by ``scheduled_at``, cost 1001).
#
# The price is the order among equal priority: first-come first-served by the
# time a job became due (put time, ``run_at``, end of backoff), not by the time it
# was first put, so a retried job goes behind jobs that became due before it, as
# in SQS. A released job keeps its place (``release_update``).
CLAIM_INDEX = IndexModel(
    [
        ("state", ASCENDING),
        ("priority", DESCENDING),
        ("visible_at", ASCENDING),
        ("_id", ASCENDING),
    ],
    name="mongoqueue_claim_v2",
)
CLAIM_SORT = [("priority", DESCENDING), ("visible_at", ASCENDING), ("_id", ASCENDING)]

#: Names of the claim index, newest first. ``mongoqueue_claim`` on ``{state,
#: priority: -1, scheduled_at, _id, visible_at}`` is the index of mongoqueue 1.x
#: before this release: ``ensure_indexes`` leaves it in place (consumers of the
#: previous release may still be claiming with its sort); drop it once none runs.
CLAIM_INDEX_NAMES = ("mongoqueue_claim_v2", "mongoqueue_claim")

# Deduplication: at most one *ready* job per key. A failed or completed job
# leaves the index, so the key can be used again. The server enforces it, so two
# concurrent puts with one key cannot both insert.
KEY_INDEX = IndexModel(
    [("key", ASCENDING)],
    name="mongoqueue_key",
    unique=True,
    partialFilterExpression={"key": {"$exists": True}, "state": READY},
)

# Held jobs only: lets repair() and stats find expired leases without a scan.
LEASE_INDEX = IndexModel(
    [("lease_expires_at", ASCENDING)],
    name="mongoqueue_lease",
    partialFilterExpression={"lease_expires_at": {"$type": "date"}},
)

# Kept (completed or cancelled) jobs only: the server deletes each once the
# clock passes its ``expire_at`` (a TTL index; mongod sweeps every 60 s). Raw
# queues never write ``expire_at``, so the index stays empty for them.
EXPIRE_INDEX = IndexModel(
    [("expire_at", ASCENDING)],
    name="mongoqueue_expire",
    expireAfterSeconds=0,
    partialFilterExpression={"expire_at": {"$type": "date"}},
)

INDEXES = (CLAIM_INDEX, KEY_INDEX, LEASE_INDEX, EXPIRE_INDEX)


def indexes() -> list[IndexModel]:
    return list(INDEXES)


# --------------------------------------------------------------------------- put


def retry_document(policy: RetryPolicy) -> Doc:
    return {
        "initial_ms": round(policy.initial * 1000),
        "maximum_ms": round(policy.maximum * 1000),
        "minimum_ms": round(policy.minimum * 1000),
        "multiplier": policy.multiplier,
        "jitter": policy.jitter,
    }


def new_job(
    job_id: ObjectId,
    payload: RawBSONDocument,
    *,
    priority: int,
    created_at: datetime,
    scheduled_at: datetime,
    visible_at: datetime | None = None,
    key: str | None = None,
    max_attempts: int | None = None,
    retry: RetryPolicy | None = None,
) -> Doc:
    """The document ``put()`` inserts.

    ``visible_at`` defaults to ``scheduled_at``; a job due at once gets a lower
    bound of the server's time instead (see ``ServerClock.spread``).
    """
    doc: Doc = {
        "_id": job_id,
        "payload": payload,
        "state": READY,
        "priority": priority,
        "scheduled_at": scheduled_at,
        "visible_at": scheduled_at if visible_at is None else visible_at,
        "attempts": 0,
        "lease_token": None,
        "locked_by": None,
        "locked_at": None,
        "lease_expires_at": None,
        "progress": None,
        "last_error": None,
        "created_at": created_at,
    }
    if key is not None:
        doc["key"] = key
    if max_attempts is not None:
        doc["max_attempts"] = max_attempts
    if retry is not None:
        doc["retry"] = retry_document(retry)
    return doc


def active_key_filter(key: str) -> Doc:
    """The ready job holding deduplication ``key`` (served by the key index)."""
    return {"key": key, "state": READY}


# --------------------------------------------------------------------------- expressions

_IS_HELD = {"$eq": [{"$type": "$lease_token"}, "string"]}
_NOT_HELD = {
    "lease_token": None,
    "locked_by": None,
    "locked_at": None,
    "lease_expires_at": None,
}


_EXPIRED_MESSAGE = {"$concat": ["lease expired (held by ", {"$toString": "$locked_by"}, ")"]}


def _literal(value: object) -> Doc:
    return {"$literal": value}


def _max_attempts(queue_max: int) -> Doc:
    return {"$ifNull": ["$max_attempts", queue_max]}


def backoff_ms(policy: RetryPolicy, jitter: float) -> Doc:
    """Server-side expression: the retry delay in ms after ``$attempts`` failures.

    ``cap = min(maximum, initial * multiplier ** (attempts - 1))`` and
    ``delay = max(minimum, jitter * cap)``, with the job's own ``retry`` settings
    taking precedence over ``policy``. ``jitter`` is drawn by the caller in
    [0, 1); it is ignored (taken as 1) when jitter is off for the job.
    """
    p = retry_document(policy)

    def setting(name: str) -> Doc:
        return {"$ifNull": [f"$retry.{name}", p[name]]}

    exponent = {"$max": [0, {"$subtract": ["$attempts", 1]}]}
    cap = {
        "$min": [
            setting("maximum_ms"),
            {"$multiply": [setting("initial_ms"), {"$pow": [setting("multiplier"), exponent]}]},
        ]
    }
    factor = {"$cond": [setting("jitter"), jitter, 1]}
    return {"$toLong": {"$max": [setting("minimum_ms"), {"$multiply": [factor, cap]}]}}


def _after_ms(ms: Doc | int) -> Doc:
    """The server's now plus ``ms`` milliseconds, as a date.

    Written as ``$toDate`` of ``$toLong`` milliseconds (MongoDB 4.0+) rather than
    ``$add`` of a date and a number, which one of our test servers rejects.
    """
    return {"$toDate": {"$add": [{"$toLong": "$$NOW"}, ms]}}


#: Failed deliveries kept in a job's ``attempts_log`` (the oldest drop out).
ATTEMPTS_KEPT = 10
#: Characters of each failure's message kept in ``attempts_log`` (``last_error`` keeps all).
ATTEMPT_ERROR_CHARS = 2000


def attempts_log_append() -> Doc:
    """``attempts_log`` with one more entry, keeping the last ``ATTEMPTS_KEPT``.

    Used in the second stage of a failure, which sees the new ``attempts`` and
    ``last_error`` of the first (so the message is sent once) and, within the
    same ``$set``, the holder's ``locked_by`` before it is cleared.
    """
    message = "$last_error"
    entry = {
        "attempt": "$attempts",
        "at": "$$NOW",
        "worker": "$locked_by",
        "error": {
            "$cond": [
                {"$eq": [{"$type": message}, "string"]},
                {"$substrCP": [message, 0, ATTEMPT_ERROR_CHARS]},
                None,
            ]
        },
    }
    log = {"$concatArrays": [{"$ifNull": ["$attempts_log", []]}, [entry]]}
    return {"$slice": [log, -ATTEMPTS_KEPT]}


#: A lease expiry counts one attempt, except on a job claimed ``prefetched`` that its
#: holder never started (it sat in a worker's buffer: its handler never ran).
_EXPIRY_STEP = {"$cond": [{"$eq": ["$prefetched", True]}, 0, 1]}


def _failure(
    message: Doc, queue_max: int, policy: RetryPolicy, jitter: float, step: Doc | int = 1
) -> tuple[Doc, Doc]:
    """The two ``$set`` stages that record one failed delivery.

    The first adds one attempt and stores ``message``; the second (which sees the
    new count and message) appends them with the time and the holder to the
    bounded ``attempts_log``, makes the job ``failed`` if it reached its max
    attempts, else ready again once its backoff has passed, and drops the lease
    either way.
    """
    first = {"attempts": {"$add": ["$attempts", step]}, "last_error": message}
    reached_max = {"$gte": ["$attempts", _max_attempts(queue_max)]}
    second = {
        "state": {"$cond": [reached_max, FAILED, READY]},
        "visible_at": _after_ms(backoff_ms(policy, jitter)),
        "attempts_log": attempts_log_append(),
        **_NOT_HELD,
    }
    return first, second


def _choose(condition: Doc, if_true: Doc, if_false: Doc) -> Doc:
    """``$set`` values: ``if_true`` where ``condition`` holds, else ``if_false``.

    A field that one side does not name keeps its current value on that side.
    """
    fields = dict.fromkeys([*if_true, *if_false])
    return {
        f: {"$cond": [condition, if_true.get(f, f"${f}"), if_false.get(f, f"${f}")]} for f in fields
    }


# --------------------------------------------------------------------------- claim


def _reached_on_server(field: str) -> Doc:
    """``$expr``: the server's own clock has reached ``field`` (decided inside the operation)."""
    return {"$lte": [f"${field}", "$$NOW"]}


def claim_filter(now: datetime) -> Doc:
    """Ready jobs the server's clock has reached: due, backoff over, or lease expired.

    ``now`` is the queue's estimate of the server's time: the literal bound on
    ``visible_at`` bounds the index range. The ``$expr`` decides on the server's
    own clock, so a lease is never taken over before it has ended on the server,
    however far ahead the estimate runs (a server clock stepped back, a failover
    to a primary whose clock is behind, several routers).
    """
    return {
        "state": READY,
        "visible_at": {"$lte": now},
        "$expr": _reached_on_server("visible_at"),
    }


def claim_update(
    token: str | Doc,
    consumer_id: str | int,
    lease_ms: int,
    queue_max: int,
    policy: RetryPolicy,
    jitter: float,
    prefetched: Doc | None = None,
) -> Pipeline:
    """The claim: one update pipeline applied to the job the claim filter picked.

    * A job that is not held is delivered: it gets the fresh ``token`` and a lease
      of ``lease_ms`` from the server's now.
    * A job still held under an *expired* lease is not delivered: its expiry is
      recorded as a failed delivery (see ``_failure``), and the caller, who
      sees that the returned ``lease_token`` is not its own, claims again.

    ``token`` is a string, or an expression giving each document its own token
    (batch claims). ``prefetched`` (batch claims of a worker) is an expression,
    true for the jobs claimed to wait in its buffer: their lease expiry counts no
    attempt until the worker starts them (``start_update``).
    """
    deliver = {
        "lease_token": _literal(token) if isinstance(token, str) else token,
        "locked_by": _literal(consumer_id),
        "locked_at": "$$NOW",
        "lease_expires_at": _after_ms(lease_ms),
        "visible_at": _after_ms(lease_ms),
        "prefetched": "$$REMOVE" if prefetched is None else prefetched,
    }
    first, second = _failure(_EXPIRED_MESSAGE, queue_max, policy, jitter, _EXPIRY_STEP)
    # Both stages test the job's original lease_token: the first stage leaves it alone.
    return [
        {"$set": _choose(_IS_HELD, first, {})},
        {"$set": _choose(_IS_HELD, second, deliver)},
    ]


def prefetched_unless(started_ids: list[Any]) -> Doc:
    """A batch claim's ``prefetched``: true but for the jobs its worker starts at once."""
    return {"$not": [{"$in": ["$_id", _literal(started_ids)]}]}


def start_update(lease_ms: int) -> Pipeline:
    """``Job.start()``: a prefetched job starts; its lease is extended by ``lease_ms``
    and from now on an expiry counts an attempt (its handler runs)."""
    return [*heartbeat_update(lease_ms), {"$unset": ["prefetched"]}]


def batch_token(prefix: str) -> Doc:
    """Per-document token for batch claims: ``prefix`` + ``:`` + the job id."""
    return {"$concat": [_literal(prefix + ":"), {"$toString": "$_id"}]}


def batch_tokens(prefix: str, ids: list[Any]) -> list[str]:
    return [f"{prefix}:{job_id}" for job_id in ids]


# --------------------------------------------------------------------------- held jobs


def held(job_id: Any, token: str) -> Doc:
    """The job, but only while ``token`` still holds it (the fence)."""
    return {"_id": job_id, "lease_token": token}


def complete_writes(fences: list[Doc]) -> list[DeleteOne]:
    """``complete_many()``: one fenced delete per job, each with the filter ``complete()``
    uses (``held``, plus the partition on a partitioned queue), in one unordered bulk write."""
    return [DeleteOne(fence) for fence in fences]


def start_writes(fences: list[Doc], lease_ms: int) -> list[UpdateOne]:
    """``start_many()``: one fenced ``start_update`` per job (its ``held`` filter)."""
    update = start_update(lease_ms)
    return [UpdateOne(fence, update) for fence in fences]


def acknowledge_writes(
    completed: list[Doc], started: list[Doc], lease_ms: int
) -> list[DeleteOne | UpdateOne]:
    """``acknowledge()``: the completions' fenced deletes and the starts' fenced updates."""
    return [*complete_writes(completed), *start_writes(started, lease_ms)]


def ids_filter(job_ids: list[Any]) -> Doc:
    """The jobs with these ids (which of a batch are still there after it)."""
    return {"_id": {"$in": job_ids}}


def fail_update(
    message: str | None, queue_max: int, policy: RetryPolicy, jitter: float
) -> Pipeline:
    """``error()``: one failed delivery, then backoff or ``failed``."""
    first, second = _failure(_literal(message), queue_max, policy, jitter)
    return [{"$set": first}, {"$set": second}]


def complete_update(result: Any, keep_ms: int) -> Pipeline:
    """``complete(result=..., keep=...)``: the held job becomes ``completed`` with its
    result, kept until ``keep_ms`` from the server's now (then the TTL index removes it).

    One update of the held job (filter ``held``), so the result is stored if and
    only if the completion's fence holds.
    """
    return [
        {
            "$set": {
                "state": COMPLETED,
                "result": _literal(result),
                "finished_at": "$$NOW",
                "expire_at": _after_ms(keep_ms),
                **_NOT_HELD,
            }
        },
        {"$unset": ["cancel_requested"]},
    ]


def cancelled_update(keep_ms: int, message: str | None = None) -> Pipeline:
    """A job ends ``cancelled`` (kept for ``keep_ms``): by its holder after a cancel
    request (filter ``held``), or while it waits (filter ``cancel_filter``)."""
    fields: Doc = {
        "state": CANCELLED,
        "finished_at": "$$NOW",
        "expire_at": _after_ms(keep_ms),
        **_NOT_HELD,
    }
    if message is not None:
        fields["last_error"] = _literal(message)
    return [{"$set": fields}]


def request_cancel_filter(job_id: Any) -> Doc:
    """A running job (ready and held): the target of a cancel request."""
    return {"_id": {"$eq": job_id}, "state": READY, "lease_token": {"$type": "string"}}


def request_cancel_update() -> Doc:
    return {"$set": {"cancel_requested": True}}


def pass_update(max_passes: int, message: str, delay_ms: int) -> Pipeline:
    """Release a held job this consumer cannot run (no handler for its task).

    Counts the pass; at ``max_passes`` the job fails with ``message`` instead of
    coming back, so a task no worker knows does not circulate for ever. The job
    becomes visible again after ``delay_ms``, so other consumers get a chance first.
    """
    passes = {"$add": [{"$ifNull": ["$passes", 0]}, 1]}
    reached = {"$gte": ["$passes", max_passes]}
    return [
        {"$set": {"passes": passes}},
        {
            "$set": {
                "state": {"$cond": [reached, FAILED, READY]},
                "last_error": {"$cond": [reached, _literal(message), "$last_error"]},
                "visible_at": _after_ms(delay_ms),
                **_NOT_HELD,
            }
        },
    ]


def release_update() -> Pipeline:
    """``release()``: back to the queue at once, attempts unchanged.

    The job gets its place back: ``visible_at`` returns to its scheduled time (or
    the server's now, for a job whose ``scheduled_at`` is missing or ahead).
    """
    return [{"$set": {**_NOT_HELD, "visible_at": {"$min": ["$scheduled_at", "$$NOW"]}}}]


def progress_update(count: int, lease_ms: int) -> Pipeline:
    """``progress()``: store the count and extend the lease by ``lease_ms`` from now."""
    return [
        {
            "$set": {
                "progress": _literal(count),
                "lease_expires_at": _after_ms(lease_ms),
                "visible_at": _after_ms(lease_ms),
            }
        }
    ]


def record_session_update(session_id: Any, lease_ms: int) -> Pipeline:
    """A transactional task is about to open a transaction in session ``session_id``:
    record it (so that a later holder can kill it if this one dies mid-transaction)
    and extend the lease by ``lease_ms`` from now, as a heartbeat does."""
    return [
        {
            "$set": {
                "txn_session": _literal(session_id),
                "lease_expires_at": _after_ms(lease_ms),
                "visible_at": _after_ms(lease_ms),
            }
        }
    ]


def heartbeat_update(lease_ms: int) -> Pipeline:
    """``heartbeat()``: extend the lease by ``lease_ms`` from now; the progress count stays."""
    return [
        {
            "$set": {
                "lease_expires_at": _after_ms(lease_ms),
                "visible_at": _after_ms(lease_ms),
            }
        }
    ]


# --------------------------------------------------------------------------- maintenance


def expired_filter(now: datetime) -> Doc:
    """Held jobs whose lease ended (served by the lease index), on the server's clock too."""
    return {
        "state": READY,
        "lease_token": {"$type": "string"},
        "lease_expires_at": {"$type": "date", "$lte": now},
        "$expr": _reached_on_server("lease_expires_at"),
    }


def expire_update(queue_max: int, policy: RetryPolicy, jitter: float) -> Pipeline:
    """``repair()``: record the expiry of each matched lease as one failed delivery
    (none for a prefetched job its holder never started)."""
    first, second = _failure(_EXPIRED_MESSAGE, queue_max, policy, jitter, _EXPIRY_STEP)
    return [{"$set": first}, {"$set": second}]


def by_id(job_id: Any) -> Doc:
    """The job whose ``_id`` equals ``job_id`` (``$eq``: an id is never read as operators)."""
    return {"_id": {"$eq": job_id}}


def failed_filter(job_id: Any = None) -> Doc:
    return {"state": FAILED} if job_id is None else {"state": FAILED, **by_id(job_id)}


def requeue_filter(job_id: Any = None) -> Doc:
    return failed_filter(job_id)


def requeue_update() -> Pipeline:
    """A failed job back to the queue, deliverable now, with a fresh attempt count."""
    return [{"$set": {"state": READY, "attempts": 0, "visible_at": "$$NOW", **_NOT_HELD}}]


def requeue_writes(job_ids: list[Any]) -> list[UpdateOne]:
    """``requeue()`` of every failed job: one update per job, for an unordered bulk write.

    A job whose key a ready job holds fails alone (duplicate key); the others are
    requeued, and the bulk write's counts say how many were.
    """
    return [UpdateOne(requeue_filter(job_id), requeue_update()) for job_id in job_ids]


def cancel_filter(job_id: Any) -> Doc:
    """``cancel()``: the job, but only while it waits (ready and not held; due or delayed).

    The id is a value (``$eq``), never read as operators: ``{"$ne": None}`` names no job.
    """
    return {**by_id(job_id), "state": READY, "lease_token": {"$not": {"$type": "string"}}}


def size_filter() -> Doc:
    """``size()``: every job in the queue, failed ones included (0.7.2 counted them all).

    Only jobs the task layer keeps after they finished are left out. Served by the
    claim index's ``state`` prefix.
    """
    return {"state": {"$nin": [COMPLETED, CANCELLED]}}


# --------------------------------------------------------------------------- counting
#
# stats() and counts() send several ``count_documents``, each on a filter an
# index serves, never a scan of the documents: ``state`` equality (with a range
# on ``visible_at``) is a prefix of the claim index; held jobs are exactly the
# entries of the partial lease index (``lease_expires_at`` is a date only while
# a job is held); ``total`` walks the ``_id`` index. Each count names its index
# (``count_hint``), so no planner can choose a collection scan. On mongod a count
# reads index keys only (no document is needed to count), one key per job in the
# index range. The counts are read one after another, not as a snapshot: a job
# that changes state between two reads can be off by one in the derived figures,
# which are clamped at zero.

#: The ``hint`` of the ``total`` count: the ``_id`` index holds every document.
TOTAL_HINT = "_id_"

#: ``stats()``'s keys, exactly the original's.
STATS_KEYS = ("available", "locked", "errors", "total")

#: ``counts()``'s keys: the shared vocabulary (``lease_expired`` is a subset of ``running``).
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


def count_hint(query: Doc) -> str:
    """The index a count of ``query`` (one of the counting filters) walks."""
    if "state" in query:
        return str(CLAIM_INDEX.document["name"])
    if "lease_expires_at" in query:
        return str(LEASE_INDEX.document["name"])
    if not query:
        return TOTAL_HINT
    raise InvalidArgument(f"no index serves a count of {query!r}")


def held_filter() -> Doc:
    """Jobs held by a consumer: the partial lease index's own filter."""
    return {"lease_expires_at": {"$type": "date"}}


def lease_expired_filter(now: datetime) -> Doc:
    """Held jobs whose lease ended by ``now`` (a range of the partial lease index)."""
    return {"lease_expires_at": {"$type": "date", "$lte": now}}


def stats_filters() -> dict[str, Doc]:
    """The counts ``stats()`` sends, by name (each with ``hint=count_hint(query)``)."""
    return {
        "ready": {"state": READY},
        "held": held_filter(),
        "failed": {"state": FAILED},
        "total": {},
    }


def stats_from(raw: dict[str, int]) -> dict[str, int]:
    """The original's ``stats()`` from the counts of :func:`stats_filters`.

    ``available``: jobs not held and not failed (0.7.2: not locked and attempts
    below max); delayed jobs and jobs in a retry backoff are included, as every
    unlocked job was available in 0.7.2. ``locked``: held jobs, expired leases
    included (0.7.2 counted a stale lock as locked until repaired). ``errors``:
    jobs that reached max attempts. ``total``: every document.
    """
    return {
        "available": max(0, raw["ready"] - raw["held"]),
        "locked": raw["held"],
        "errors": raw["failed"],
        "total": raw["total"],
    }


def count_filters(now: datetime) -> dict[str, Doc]:
    """The counts ``counts()`` sends, by name (each with ``hint=count_hint(query)``).

    A held job's ``visible_at`` is its lease end, so ``due`` counts the waiting
    jobs plus the held ones past their lease, and ``not_due`` the delayed jobs
    plus the held ones within their lease; :func:`counts_from` takes those apart.
    """
    return {
        "due": {"state": READY, "visible_at": {"$lte": now}},
        "not_due": {"state": READY, "visible_at": {"$gt": now}},
        "running": held_filter(),
        "lease_expired": lease_expired_filter(now),
        "failed": {"state": FAILED},
        "completed": {"state": COMPLETED},
        "cancelled": {"state": CANCELLED},
        "total": {},
    }


def counts_from(raw: dict[str, int]) -> dict[str, int]:
    """``counts()`` (keys ``COUNT_KEYS``) from the counts of :func:`count_filters`."""
    running, expired = raw["running"], min(raw["lease_expired"], raw["running"])
    return {
        "waiting": max(0, raw["due"] - expired),
        "delayed": max(0, raw["not_due"] - (running - expired)),
        "running": running,
        "lease_expired": expired,
        "failed": raw["failed"],
        "completed": raw["completed"],
        "cancelled": raw["cancelled"],
        "total": raw["total"],
    }


#: States a listing can filter on (the CLI's ``--state``, the dashboard's lists): the
#: states of ``counts()``, plus ``all``.
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

#: Older names still accepted for a listing's state (the 1.0 previews used them).
STATE_ALIASES = {"available": "waiting", "locked": "running", "expired": "lease_expired"}


def list_state(state: str) -> str:
    """``state`` as one of ``LIST_STATES`` (an alias is translated), else InvalidArgument."""
    state = STATE_ALIASES.get(state, state)
    if state not in LIST_STATES:
        raise InvalidArgument(f"state must be one of {', '.join(LIST_STATES)}, got {state!r}")
    return state


def state_filter(state: str, now: datetime) -> Doc:
    """Jobs in one of ``LIST_STATES`` (or an alias), as ``counts()`` counts them."""
    not_held = {"state": READY, "lease_token": {"$not": {"$type": "string"}}}
    running = {"state": READY, "lease_token": {"$type": "string"}}
    filters: dict[str, Doc] = {
        "waiting": {**not_held, "visible_at": {"$lte": now}},
        "delayed": {**not_held, "visible_at": {"$gt": now}},
        "running": running,
        "lease_expired": {**running, "lease_expires_at": {"$lte": now}},
        "failed": failed_filter(),
        "completed": {"state": COMPLETED},
        "cancelled": {"state": CANCELLED},
        "all": {},
    }
    return filters[list_state(state)]


#: Listing order: by stored state, then the claim order; the claim index serves it
#: (``state`` is its first field), so a page is read from the index, never sorted.
LISTING_SORT = [("state", ASCENDING), *CLAIM_SORT]

_CURSOR_JSON = json_util.CANONICAL_JSON_OPTIONS.with_options(tz_aware=True, tzinfo=timezone.utc)


def listing_cursor(doc: Mapping[str, Any]) -> str:
    """A job's place in the listing order, as a string to pass as ``jobs(after=...)``."""
    place = [doc.get("state"), doc.get("priority"), doc.get("visible_at"), doc["_id"]]
    return json_util.dumps(place, json_options=_CURSOR_JSON)


def after_filter(cursor: str) -> Doc:
    """Jobs after the place ``listing_cursor`` gave, in ``LISTING_SORT`` order (keyset paging)."""
    try:
        state, priority, visible_at, job_id = json_util.loads(cursor, json_options=_CURSOR_JSON)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(
            f"after must be a job from a previous listing or its listing_cursor(), got {cursor!r}"
        ) from exc
    same_state = {"state": {"$eq": state}}
    same_priority = {**same_state, "priority": {"$eq": priority}}
    same_visible = {**same_priority, "visible_at": {"$eq": visible_at}}
    return {
        "$or": [
            {"state": {"$gt": state}},
            {**same_state, "priority": {"$lt": priority}},
            {**same_priority, "visible_at": {"$gt": visible_at}},
            {**same_visible, "_id": {"$gt": job_id}},
        ]
    }


def listing_filter(
    state: str,
    now: datetime,
    *,
    key: str | None = None,
    locked_by: str | None = None,
    priority: int | None = None,
    after: str | None = None,
) -> Doc:
    """``state_filter`` narrowed by exact matches and, for paging, ``after_filter``."""
    doc = dict(state_filter(state, now))
    extra = {"key": key, "locked_by": locked_by, "priority": priority}
    doc.update({field: {"$eq": value} for field, value in extra.items() if value is not None})
    if after is not None:
        doc = {"$and": [doc, after_filter(after)]}
    return doc


#: Fields a handle reads back after a state change (everything but the payload).
METADATA_PROJECTION = {"payload": 0}


def wake_pipeline() -> Pipeline:
    """Change stream filter for ``next(wait=)``: changes that may make a job claimable.

    Inserts, and updates that leave a ready job unheld (release, error, expiry,
    requeue). Update pipelines may be reported as ``update`` (with the changed
    fields) or as ``replace`` (with the whole document), so both are matched. The
    stream only wakes consumers; they still claim with the atomic claim.
    """
    return [
        {
            "$match": {
                "$or": [
                    {"operationType": "insert"},
                    {"updateDescription.updatedFields.lease_token": {"$type": "null"}},
                    {"updateDescription.updatedFields.state": READY},
                    {
                        "operationType": "replace",
                        "fullDocument.state": READY,
                        "fullDocument.lease_token": {"$type": "null"},
                    },
                ]
            }
        },
        {"$project": {"operationType": 1}},
    ]
