"""The migration from mongoqueue 0.7 without I/O: its documents, checks and report.

mongoqueue 0.7.2 stored a job as::

    _id          ObjectId   made by the driver at put()
    payload      document   what was put
    priority     int        higher first
    attempts     int        0 at put(); set to 1 by next(); +1 by error() and release()
    locked_by    any|null   consumer_id of the holder (next() sets it, error/release unset it)
    locked_at    date|null  the holder's *local* time at next() or progress()
    last_error   str|null   the message of the last error()
    progress     int        (optional) the last progress() count

and had no ``state`` field, which is how the queue tells them from current jobs
(:mod:`mongoqueue.operations`). :func:`classify` sorts each into what it was:

* **waiting**: not locked and ``attempts < max_attempts`` -> a ready job, due now;
* **failed**: not locked and ``attempts >= max_attempts`` (0.7's ``errors``) -> a
  failed job, its ``last_error`` kept;
* **running**: locked by a consumer -> a ready job held under a lease that ends
  ``timeout`` seconds after the migration (server's clock: the old ``locked_at``
  was the consumer's local time). Its fencing token is ``"0.7:" + _id``.

Anything else (unknown fields, wrong types, a lock without a date) is
*unclassifiable*, and the migration refuses to start.

Waiting jobs keep their order: ``scheduled_at`` (the FIFO key after priority) is
the time in the job's ObjectId, which is when 0.7's ``put`` made it, capped at
the migration's time; with ``_id`` as the tie-breaker, jobs of one priority are
claimed in ``_id`` order, as 0.7 inserted them. Attempts, priority, payload,
progress and last error are kept as they were.

Each document is converted by one atomic update whose filter is its old shape,
every field as it was read (:func:`old_shape_filter`): a document that changed
in between (an old consumer still running) is left alone and looked at again,
and a converted one no longer matches, so an interrupted run simply resumes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import UpdateOne

from .errors import MigrationError, MigrationRefused, OldFormatDocuments
from .operations import FAILED, READY
from .validation import check_positive_int, check_seconds

__all__ = [
    "KINDS",
    "OLD_FORMAT",
    "Batch",
    "MigrationReport",
    "Survey",
    "after_filter",
    "check_migration_arguments",
    "classify",
    "convert_update",
    "incomplete",
    "old_format_error",
    "old_shape_filter",
    "refusal",
    "survey_pipeline",
]

#: Passes over the old documents before giving up on ones that keep changing.
MAX_PASSES = 5

Doc = dict[str, Any]
Pipeline = list[Doc]

#: Documents not written by this version: every current job has a ``state``.
OLD_FORMAT: Doc = {"state": {"$exists": False}}

#: The fields mongoqueue 0.7.2 wrote.
OLD_FIELDS = frozenset(
    {"_id", "payload", "priority", "attempts", "locked_by", "locked_at", "last_error", "progress"}
)

#: What a 0.7 document may be, in the order reports list them.
KINDS = ("waiting", "failed", "running")

#: Prefix of the fencing token given to jobs that were held when migrated.
TOKEN_PREFIX = "0.7:"

#: Unclassifiable documents described in a refusal.
EXAMPLES = 5


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def survey_pipeline(match: Doc | None = None, limit: int | None = None) -> Pipeline:
    """Old-format documents in ``_id`` order, each with its payload replaced by its type."""
    pipeline: Pipeline = [{"$match": match or OLD_FORMAT}, {"$sort": {"_id": 1}}]
    if limit is not None:
        pipeline.append({"$limit": limit})
    pipeline.append({"$set": {"payload": {"$type": "$payload"}}})
    return pipeline


def after_filter(last_id: Any) -> Doc:
    """Old-format documents after ``last_id`` (the next page of a pass)."""
    return {**OLD_FORMAT, "_id": {"$gt": last_id}}


def classify(doc: Mapping[str, Any], max_attempts: int) -> tuple[str, str | None]:
    """``(kind, None)`` for a 0.7 document, or ``("unclassifiable", reason)``.

    ``doc`` comes from :func:`survey_pipeline`: its ``payload`` is the payload's
    BSON type name.
    """
    unknown = sorted(set(doc) - OLD_FIELDS)
    problems = []
    if doc.get("payload") != "object":
        problems.append(f"payload is {doc.get('payload', 'missing')}, not a document")
    if unknown:
        problems.append(f"fields {', '.join(map(repr, unknown))} are not mongoqueue 0.7's")
    if not isinstance(doc.get("_id"), ObjectId):
        problems.append("_id is not an ObjectId")
    if not _is_int(doc.get("priority")):
        problems.append(f"priority {doc.get('priority')!r} is not an integer")
    attempts = doc.get("attempts")
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
        problems.append(f"attempts {attempts!r} is not a count")
        attempts = 0
    locked_by, locked_at = doc.get("locked_by"), doc.get("locked_at")
    if locked_by is None and locked_at is not None:
        problems.append("locked_at is set but locked_by is not")
    if locked_by is not None:
        if not (isinstance(locked_by, str) or _is_int(locked_by)):
            problems.append(f"locked_by {locked_by!r} is not a consumer id")
        if not isinstance(locked_at, datetime):
            problems.append("locked_by is set but locked_at is not a date")
    if doc.get("last_error") is not None and not isinstance(doc.get("last_error"), str):
        problems.append("last_error is not a string")
    if doc.get("progress") is not None and not _is_int(doc.get("progress")):
        problems.append(f"progress {doc.get('progress')!r} is not an integer")
    if problems:
        return "unclassifiable", "; ".join(problems)
    if locked_by is not None:
        return "running", None
    return ("failed" if attempts >= max_attempts else "waiting"), None


def old_shape_filter(doc: Mapping[str, Any]) -> Doc:
    """The document exactly as it was read (every 0.7 field, ``$eq``), still old-format."""
    shape: Doc = {"_id": {"$eq": doc["_id"]}, **OLD_FORMAT, "payload": {"$type": "object"}}
    for field in sorted(OLD_FIELDS - {"_id", "payload"}):
        shape[field] = {"$eq": doc.get(field)}
    return shape


def _millis(expression: Any) -> Doc:
    return {"$toLong": expression}


#: When the job became due: its ObjectId's time, or the migration's if that is later.
_SINCE = {"$toDate": {"$min": [_millis({"$toDate": "$_id"}), _millis("$$NOW")]}}


def _after_ms(ms: int) -> Doc:
    return {"$toDate": {"$add": [_millis("$$NOW"), ms]}}


def convert_update(kind: str, lease_ms: int) -> Pipeline:
    """The update that turns a 0.7 document of ``kind`` into a current job.

    Every field of the current format is written (:mod:`mongoqueue.operations`);
    ``payload``, ``priority`` and ``attempts`` stay as they are.
    """
    fields: Doc = {
        "state": FAILED if kind == "failed" else READY,
        "scheduled_at": _SINCE,
        "visible_at": _SINCE,
        "lease_token": None,
        "locked_by": None,
        "locked_at": None,
        "lease_expires_at": None,
        "progress": {"$ifNull": ["$progress", None]},
        "last_error": {"$ifNull": ["$last_error", None]},
        "created_at": _SINCE,
    }
    if kind == "running":
        fields.update(
            lease_token={"$concat": [TOKEN_PREFIX, {"$toString": "$_id"}]},
            locked_by={"$toString": "$locked_by"},
            locked_at="$$NOW",
            lease_expires_at=_after_ms(lease_ms),
            visible_at=_after_ms(lease_ms),
        )
    elif kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    return [{"$set": fields}]


def old_format_error(count: int, full_name: str) -> OldFormatDocuments:
    return OldFormatDocuments(
        f"{full_name} holds {count} document{'' if count == 1 else 's'} written by "
        "mongoqueue 0.7.x, which this "
        "version cannot read: stop the old consumers, then run `mongoqueue migrate` "
        "(or queue.migrate()) to convert them in place. See 'Upgrading from 0.7' in the README.",
        count,
    )


class Survey:
    """Counts of old-format documents by kind, and a few unclassifiable ones described."""

    def __init__(self, max_attempts: int) -> None:
        self.max_attempts = max_attempts
        self.counts = dict.fromkeys((*KINDS, "unclassifiable"), 0)
        self.examples: list[tuple[Any, str]] = []

    def add(self, doc: Mapping[str, Any]) -> None:
        kind, reason = classify(doc, self.max_attempts)
        self.counts[kind] += 1
        if reason is not None and len(self.examples) < EXAMPLES:
            self.examples.append((doc.get("_id"), reason))

    def finish(self, current: int, total: int) -> dict[str, int]:
        return {**self.counts, "current": current, "total": total}


class Batch:
    """One page of a conversion pass: the updates to send, grouped by kind."""

    def __init__(self, docs: list[Mapping[str, Any]], max_attempts: int, lease_ms: int) -> None:
        self.last_id = docs[-1]["_id"] if docs else None
        self.requests: dict[str, list[UpdateOne]] = {kind: [] for kind in KINDS}
        for doc in docs:
            kind, reason = classify(doc, max_attempts)
            if reason is None:  # appeared since the survey: left for the final check
                self.requests[kind].append(
                    UpdateOne(old_shape_filter(doc), convert_update(kind, lease_ms))
                )


@dataclass(frozen=True)
class MigrationReport:
    """What a migration found and did.

    ``before`` and ``after`` count the old-format documents by kind
    (``waiting``, ``failed``, ``running``, ``unclassifiable``), the ``current``
    jobs and the ``total``; ``converted`` counts the documents converted by
    kind. ``complete`` is True when no old-format document is left.
    """

    collection: str
    before: dict[str, int]
    converted: dict[str, int]
    after: dict[str, int]
    dry_run: bool = False

    @property
    def complete(self) -> bool:
        return not any(self.after[kind] for kind in (*KINDS, "unclassifiable"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "dry_run": self.dry_run,
            "complete": self.complete,
            "before": dict(self.before),
            "converted": dict(self.converted),
            "after": dict(self.after),
        }


def check_migration_arguments(
    timeout: object, max_attempts: object, limit: object, batch_size: object
) -> tuple[int, int, int | None, int]:
    """``(lease_ms, max_attempts, limit, batch_size)`` checked."""
    seconds = check_seconds("timeout", timeout, allow_zero=False)
    max_attempts = check_positive_int("max_attempts", max_attempts)
    if limit is not None:
        limit = check_positive_int("limit", limit)
    batch_size = check_positive_int("batch_size", batch_size)
    return max(1, round(seconds * 1000)), max_attempts, limit, batch_size


def incomplete(full_name: str, left: int, converted: int) -> MigrationError:
    return MigrationError(
        f"{left} document{'' if left == 1 else 's'} of {full_name} kept changing while "
        "being migrated (are "
        f"old consumers still running?); the {converted} converted so far are valid jobs. "
        "Stop every 0.7 consumer and run the migration again: it resumes."
    )


def refusal(full_name: str, count: int, examples: list[tuple[Any, str]]) -> MigrationRefused:
    """The error for ``count`` unclassifiable documents (a few described)."""
    listed = "; ".join(f"_id {doc_id!r}: {reason}" for doc_id, reason in examples)
    return MigrationRefused(
        f"refusing to migrate {full_name}: {count} documents without a 'state' field are "
        f"not jobs written by mongoqueue 0.7 as far as the migration can tell, so nothing "
        f"was written. {listed}. Fix or remove them (or move them to another collection), "
        "then run the migration again."
    )
