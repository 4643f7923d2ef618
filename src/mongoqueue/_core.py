"""The I/O-free core shared by :class:`MongoQueue` and :class:`AsyncMongoQueue`.

Like pymongo's ``*_shared.py`` modules: everything a queue *decides* lives
here (validated settings, the job documents to insert, the updates to send,
how to read the replies, the errors to raise), and the two queue classes only
add the I/O, one plain call or one ``await`` each. Nothing here talks to the
server, sleeps or reads a wall clock. The documents themselves come from
:mod:`mongoqueue.operations`.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pymongo.errors
from bson import ObjectId
from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.collection import Collection

from . import operations as ops
from . import partitions as parts
from .clock import ServerClock
from .errors import (
    DuplicateKeyConflict,
    IndexConflict,
    InvalidArgument,
    InvalidArgumentType,
    LeaseLost,
)
from .job import JobData, finished_handle_message, lease_lost_message
from .retry import NO_BACKOFF, RetryPolicy
from .status import JobStatus, job_status
from .validation import (
    DEFAULT_MAX_DOCUMENT_BYTES,
    INT64_MAX,
    INT64_MIN,
    check_bson_value,
    check_consumer_id,
    check_delay,
    check_key,
    check_positive_int,
    check_priority,
    check_seconds,
    encode_payload,
)
from .waiting import Deadline, PollBackoff, WakeState

__all__ = [
    "DEFAULT_RETRY",
    "KEY_RETRIES",
    "MAX_BATCH",
    "MAX_ERROR_CHARS",
    "MAX_EXPIRIES_PER_CLAIM",
    "QUEUE_DEFAULT_RETRY",
    "QueueConfig",
    "QueueCore",
]

#: The backoff of the new surfaces (the CLI worker, the task layer): full-jitter
#: exponential backoff from 1 s up to 5 min. ``MongoQueue`` and ``AsyncMongoQueue``
#: default to ``NO_BACKOFF`` (a failed job is available again at once, as in 0.7.2);
#: pass ``retry=DEFAULT_RETRY`` (or any ``RetryPolicy``) to back off.
DEFAULT_RETRY = RetryPolicy()

#: ``MongoQueue``'s and ``AsyncMongoQueue``'s default: the original's immediate retry.
QUEUE_DEFAULT_RETRY = NO_BACKOFF

#: A claim that meets expired leases records each expiry and tries again; it
#: gives up (returning None) after this many in one call.
MAX_EXPIRIES_PER_CLAIM = 100

#: Largest batch ``next_batch`` claims at once.
MAX_BATCH = 10_000

#: Longest error message stored with a job (``error()``); longer ones keep their
#: first and last halves, so a traceback's final line survives.
MAX_ERROR_CHARS = 64 * 1024

#: How many times ``put(key=...)`` retries when the job holding the key finished
#: between its insert and its lookup.
KEY_RETRIES = 5

#: Server error code of a ``hint`` naming no existing index (among other bad values).
_BAD_VALUE = 2

#: Server error codes of ``createIndexes`` meaning "an index with this name differs".
_INDEX_CONFLICT_CODES = (85, 86)  # IndexOptionsConflict, IndexKeySpecsConflict

#: Server error codes of a duplicate key (11000; 11001 and 12582 from old servers).
_DUPLICATE_KEY_CODES = (11000, 11001, 12582)

J = TypeVar("J", bound=JobData)


class QueueConfig:
    """Validated settings shared by the sync and async queues."""

    def __init__(
        self,
        consumer_id: object,
        timeout: object,
        max_attempts: object,
        retry: object,
    ) -> None:
        self.consumer_id = check_consumer_id(consumer_id)
        self.timeout = check_seconds("timeout", timeout, allow_zero=False)
        self.max_attempts = check_positive_int("max_attempts", max_attempts)
        if not isinstance(retry, RetryPolicy):
            raise InvalidArgumentType(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        self.retry = retry

    @property
    def lease_ms(self) -> int:
        return max(1, round(self.timeout * 1000))

    def claim_update(
        self, token: str | dict[str, Any], prefetched: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        return ops.claim_update(
            token,
            self.consumer_id,
            self.lease_ms,
            self.max_attempts,
            self.retry,
            self.retry.draw_jitter(),
            prefetched,
        )


def check_collection(collection: object, expected: type, twin: type, queue_name: str) -> None:
    """Refuse anything but the collection class the queue drives (naming the twin)."""
    if isinstance(collection, expected):
        return
    hint = ""
    if isinstance(collection, twin):
        other = "AsyncMongoQueue" if queue_name == "MongoQueue" else "MongoQueue"
        hint = f"; pass a {twin.__name__} to {other} instead"
    client = "AsyncMongoClient" if queue_name == "AsyncMongoQueue" else "MongoClient"
    raise InvalidArgumentType(
        f"collection must be a pymongo {expected.__name__} (for example "
        f"{client}(uri).mydb.jobs), got {type(collection).__name__}{hint}"
    )


def check_queue_collection(collection: object, queue_name: str) -> None:
    """:func:`check_collection` for ``"MongoQueue"`` or ``"AsyncMongoQueue"``.

    The generated sync twin and its async source name only their own collection class.
    """
    if queue_name == "AsyncMongoQueue":
        check_collection(collection, AsyncCollection, Collection, queue_name)
    else:
        check_collection(collection, Collection, AsyncCollection, queue_name)


class EventCounts:
    """What one queue object has done in this process, for metrics (thread-safe).

    ``put``: jobs it inserted. ``lease_expiries``: expired leases it recorded
    as failed deliveries (met by a claim, or freed by ``repair()``); each expiry
    is recorded by exactly one atomic operation, so the sum over all processes
    is the queue's total. Plain counters, no I/O: :mod:`mongoqueue.metrics`
    reads them at scrape time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.put = 0
        self.lease_expiries = 0

    def add(self, name: str, count: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + count)


class QueueCore:
    """Settings, clock estimate and every I/O-free step of a queue.

    The sync and async queues derive from it and add the server calls. Their
    public methods have the same names and signatures (a test compares them).
    """

    #: Whether ``next_batch()`` claims what ``next()`` would; a group of queues (task
    #: workers) says False, and a worker then claims one job per free slot.
    batch_claims = True

    def __init__(
        self,
        consumer_id: object,
        timeout: object,
        max_attempts: object,
        retry: object,
        partitions: object = 1,
    ):
        self._config = QueueConfig(consumer_id, timeout, max_attempts, retry)
        #: The count of partitions (1: an unpartitioned queue; see ``mongoqueue.partitions``).
        self._partitions = parts.check_partitions(partitions)
        #: The partition claims start from (the home partition, then the last one that
        #: had a due job); deals partitions to jobs without a key.
        self._claim_partition = parts.home_partition(self._config.consumer_id, self._partitions)
        self._dealer = parts.Dealer(self._partitions)
        self._partitions_checked = False
        self._clock = ServerClock()
        self._max_document_bytes = DEFAULT_MAX_DOCUMENT_BYTES
        #: The collection's codec options (payloads are encoded with them); the queue sets it.
        self._codec_options: CodecOptions[Any] = DEFAULT_CODEC_OPTIONS
        self._indexes_ready = False
        #: True once the collection was seen to hold no mongoqueue 0.7 documents.
        self._format_checked = False
        self._change_streams = True
        #: The change stream ``next(wait=)`` keeps open between calls (see ``waiting``).
        self._wake = WakeState()
        #: The polling interval of ``next(wait=)`` without change streams.
        self._poll = PollBackoff()
        self._last_due_put: datetime | None = None
        #: Per-process event counts (read by :mod:`mongoqueue.metrics`).
        self.events = EventCounts()

    # ------------------------------------------------------------------ settings

    # 0.7.2 kept these as plain attributes, so old code may set them after
    # construction; each assignment is checked like the constructor's argument.

    @property
    def consumer_id(self) -> str | int:
        return self._config.consumer_id

    @consumer_id.setter
    def consumer_id(self, value: str | int) -> None:
        self._config = QueueConfig(value, self.timeout, self.max_attempts, self.retry)

    @property
    def timeout(self) -> float:
        return self._config.timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._config = QueueConfig(self.consumer_id, value, self.max_attempts, self.retry)

    @property
    def max_attempts(self) -> int:
        return self._config.max_attempts

    @max_attempts.setter
    def max_attempts(self, value: int) -> None:
        self._config = QueueConfig(self.consumer_id, self.timeout, value, self.retry)

    @property
    def retry(self) -> RetryPolicy:
        return self._config.retry

    def _describe(self, full_name: str) -> str:
        return (
            f"<{type(self).__name__} {full_name} consumer={self.consumer_id!r} "
            f"timeout={self.timeout}s max_attempts={self.max_attempts}>"
        )

    # ------------------------------------------------------------------ plumbing

    def _job_target(self, job: object) -> tuple[Any, int | None]:
        """The id and, when known, the partition of a job named by handle or id.

        A handle knows its partition; an id from outside does not (the queue then
        looks it up: one read sent to every partition, see ``_scope``).
        """
        if isinstance(job, JobData):
            return job.id, job.data.get(parts.PARTITION) if self._partitions > 1 else None
        return self._id_value(job), None

    @staticmethod
    def _index_conflict(
        exc: pymongo.errors.OperationFailure, full_name: str
    ) -> IndexConflict | None:
        """Our error for a failed ``createIndexes``, or None to re-raise the driver's."""
        if exc.code not in _INDEX_CONFLICT_CODES:
            return None
        return IndexConflict(
            f"an index named like one of mongoqueue's exists on {full_name} with a "
            f"different definition: {exc}. Drop it and let the queue create its own."
        )

    def _record_hello(
        self, reply: Mapping[str, Any], sent_at: float, received_at: float, first: bool = True
    ) -> None:
        """Anchor the clock on a ``hello`` sent and answered at these monotonic times.

        The first ``hello`` of a sync re-anchors; the others of the same sync only
        narrow the estimate (the best round trip wins).
        """
        if first:
            self._clock.record(reply["localTime"], sent_at, received_at)
        else:
            self._clock.observe(reply["localTime"], sent_at, received_at)
        self._max_document_bytes = int(reply.get("maxBsonObjectSize", DEFAULT_MAX_DOCUMENT_BYTES))

    def _observe_claim(self, doc: Mapping[str, Any], sent_at: float, received_at: float) -> None:
        """Narrow the clock estimate with the ``locked_at`` (``$$NOW``) a claim wrote."""
        locked_at = doc.get("locked_at")
        if isinstance(locked_at, datetime):
            self._clock.observe(locked_at, sent_at, received_at)

    # ------------------------------------------------------------------ put

    def _new_job(
        self,
        payload: object,
        priority: object,
        delay: object,
        run_at: object,
        key: object,
        max_attempts: object,
        retry: object,
        now: datetime,
    ) -> dict[str, Any]:
        """The document ``put`` inserts, after checking every argument."""
        priority = check_priority(priority)
        delay_seconds, run_at_utc = check_delay(delay, run_at)
        if max_attempts is not None:
            max_attempts = check_positive_int("max_attempts", max_attempts)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidArgumentType(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        scheduled = run_at_utc if run_at_utc is not None else now + timedelta(seconds=delay_seconds)
        if run_at_utc is None and delay_seconds == 0:
            # A job due at once is due from a lower bound of the server's time, so a
            # consumer whose clock estimate is less ahead than ours still sees it as
            # due. Never earlier than the previous one this queue put: a re-anchored
            # clock with a wider spread must not put a job ahead of an earlier one.
            scheduled = self._clock.lower()
            if self._last_due_put is not None and self._last_due_put > scheduled:
                scheduled = self._last_due_put
            self._last_due_put = scheduled
        doc = ops.new_job(
            ObjectId(),
            encode_payload(payload, self._max_document_bytes, self._codec_options),
            priority=priority,
            created_at=now,
            scheduled_at=scheduled,
            key=check_key(key),
            max_attempts=max_attempts,
            retry=retry,
        )
        if self._partitions > 1:
            doc[parts.PARTITION] = (
                self._dealer.deal()
                if key is None
                else parts.partition_of_key(doc["key"], self._partitions)
            )
        return doc

    # ------------------------------------------------------------------ partitions

    @property
    def partitions(self) -> int:
        """The count of partitions (1: an unpartitioned queue)."""
        return self._partitions

    def _indexes(self) -> list[Any]:
        return parts.indexes(self._partitions)

    def _of_job(self, query: dict[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
        """``query`` on one job, with its partition by equality in a partitioned queue."""
        if self._partitions == 1:
            return query
        return parts.in_partition(query, data[parts.PARTITION])

    def _in(self, query: dict[str, Any], partition: int | None) -> dict[str, Any]:
        return query if partition is None else parts.in_partition(query, partition)

    def _across(self, query: dict[str, Any]) -> dict[str, Any]:
        """``query`` over every partition (unchanged in an unpartitioned queue)."""
        return query if self._partitions == 1 else parts.across(query, self._partitions)

    def _count_hint(self, query: dict[str, Any]) -> str:
        return ops.count_hint(query) if self._partitions == 1 else parts.count_hint(query)

    def _probe_ranges(self) -> list[list[int]]:
        """Where a claim looks for another partition with a due job, from a random start."""
        return parts.probe_ranges(self._partitions, random.randrange(self._partitions))

    @staticmethod
    def _check_payloads(payloads: object) -> Iterable[Any]:
        if isinstance(payloads, (Mapping, str, bytes)) or not isinstance(payloads, Iterable):
            raise InvalidArgumentType(
                "payloads must be an iterable of mappings (for example a list of dicts)"
            )
        return payloads

    def _new_jobs(
        self,
        payloads: Iterable[Any],
        priority: object,
        delay: object,
        run_at: object,
        max_attempts: object,
        retry: object,
        now: datetime,
    ) -> list[dict[str, Any]]:
        """The documents ``put_many`` inserts; a bad payload fails them all, by index."""
        docs = []
        for index, payload in enumerate(payloads):
            try:
                docs.append(
                    self._new_job(payload, priority, delay, run_at, None, max_attempts, retry, now)
                )
            except (InvalidArgument, InvalidArgumentType) as exc:
                raise type(exc)(f"payloads[{index}]: {exc}") from exc
        return docs

    @staticmethod
    def _key_conflict(key: str) -> DuplicateKeyConflict:
        return DuplicateKeyConflict(
            f"could not put a job with key {key!r}: jobs with that key kept "
            "finishing and reappearing while we tried; try again"
        )

    # ------------------------------------------------------------------ claim

    @staticmethod
    def _new_token() -> str:
        return str(ObjectId())

    @staticmethod
    def _is_own_claim(doc: Mapping[str, Any], token: str) -> bool:
        """Whether a claim's reply delivered the job to us (else it recorded an expiry)."""
        return doc.get("lease_token") == token

    @staticmethod
    def _wait_deadline(wait: object) -> Deadline | None:
        """``next(wait=)``: None for no waiting, else the deadline to wait until."""
        if wait is None:
            return None
        seconds = check_seconds("wait", wait, allow_zero=True)
        return Deadline(seconds) if seconds else None

    def _claims_before_waiting(self) -> bool:
        """Whether ``next(wait=)`` claims before it starts waiting.

        Only when it has no wait state to go by (no change stream of this queue open
        yet, or another waiter using it): an open stream's wait, and polling, claim
        first themselves when a claim is due, and not when a claim found nothing a
        moment ago and nothing has changed since (a change would be waiting on the
        stream, read at once).
        """
        if not self._change_streams:
            return False
        return self._wake.stream is None or self._wake.lock.locked()

    @staticmethod
    def _check_hold(hold: object, n: int) -> int:
        if isinstance(hold, bool) or not isinstance(hold, int):
            raise InvalidArgumentType(f"hold must be an int, got {type(hold).__name__}")
        if not 0 <= hold <= n:
            raise InvalidArgument(f"hold must be from 0 to n ({n}), got {hold}")
        return hold

    @staticmethod
    def _check_batch_size(n: object) -> int:
        n = check_positive_int("n", n)
        if n > MAX_BATCH:
            raise InvalidArgument(f"n must be at most {MAX_BATCH}, got {n}")
        return n

    def _batch_update(
        self,
        now: datetime,
        ids: list[Any],
        prefix: str,
        partition: int | None = None,
        hold: int = 0,
    ) -> tuple[Any, Any]:
        """Filter and update of a batch claim's second round trip; the last ``hold``
        of ``ids`` are claimed prefetched (see ``next_batch``)."""
        prefetched = None if hold <= 0 else ops.prefetched_unless(ids[: max(0, len(ids) - hold)])
        claim = self._in({**ops.claim_filter(now), "_id": {"$in": ids}}, partition)
        return claim, self._config.claim_update(ops.batch_token(prefix), prefetched)

    def _batch_fetch_filter(
        self, ids: list[Any], prefix: str, partition: int | None = None
    ) -> dict[str, Any]:
        """The jobs of ``ids`` that the batch claim ``prefix`` won."""
        return self._in(
            {"_id": {"$in": ids}, "lease_token": {"$in": ops.batch_tokens(prefix, ids)}}, partition
        )

    @staticmethod
    def _in_claim_order(ids: list[Any], docs: Iterable[Mapping[str, Any]]) -> list[Any]:
        claimed = {doc["_id"]: doc for doc in docs}
        return [claimed[i] for i in ids if i in claimed]

    def _batch_expiries(self, modified: int, won: int) -> int:
        """Expired leases a batch claim recorded (it modified them but did not win them)."""
        expiries = max(0, modified - won)
        if expiries:
            self.events.add("lease_expiries", expiries)
        return expiries

    # ------------------------------------------------------------------ job handle

    @staticmethod
    def _token_of(job: JobData, action: str) -> str:
        """The claim token ``job`` holds, or LeaseLost when it holds none."""
        if job._token is None:
            raise LeaseLost(finished_handle_message(job.id, action))
        return job._token

    @staticmethod
    def _completed_by(job: JobData) -> bool:
        """Whether this handle itself completed the job: a second ``complete()`` is a no-op
        (0.7.2's matched nothing and returned None)."""
        return job._token is None and job._settled == "complete"

    @staticmethod
    def _after_complete(job: JobData) -> dict[str, Any]:
        job._token = None
        job._settled = "complete"
        job._let_go = None  # complete() lets go without a mark (see ``LetGo``)
        return job.data

    @staticmethod
    def _held_targets(
        jobs: object, job_type: type, queue: object
    ) -> tuple[list[Any], list[tuple[Any, str]]]:
        """Check a batch of jobs: the jobs (a list), and the ``(id, token)`` of each
        one its handle still holds (those a write is sent for)."""
        if isinstance(jobs, (str, bytes, Mapping)) or not isinstance(jobs, Iterable):
            raise InvalidArgumentType(f"expected a list of jobs, got {type(jobs).__name__}")
        jobs = list(jobs)
        held: list[tuple[Any, str]] = []
        for job in jobs:
            if not isinstance(job, JobData) or not isinstance(job, job_type):
                raise InvalidArgumentType(f"expected jobs claimed from this queue, got {job!r}")
            if getattr(job, "queue", None) is not queue:
                raise InvalidArgumentType(f"expected jobs claimed from this queue, got {job!r}")
            if job._token is not None:
                held.append((job.id, job._token))
        return jobs, held

    def _fences(self, jobs: list[Any]) -> list[dict[str, Any]]:
        """The fenced filter of each job its handle still holds (as ``_held_targets``
        selects them), with the partition on a partitioned queue."""
        return [
            self._of_job(ops.held(job.id, job._token), job.data)
            for job in jobs
            if job._token is not None
        ]

    @staticmethod
    def _after_complete_many(jobs: list[Any], current: list[Any] | None) -> list[bool]:
        """Each job's outcome after ``complete_many``: True when it is completed (gone
        from the queue), False when this handle no longer held it (lease lost).
        ``current``: the ``(id, lease_token)`` of the batch's jobs still stored, read
        after the bulk write (None when every write matched)."""
        present = [] if current is None else [job_id for job_id, _ in current]
        outcomes = []
        for job in jobs:
            if QueueCore._completed_by(job):
                outcomes.append(True)
            elif job._token is None or job.id in present:
                job._token = None
                outcomes.append(False)
            else:
                QueueCore._after_complete(job)
                outcomes.append(True)
        return outcomes

    @staticmethod
    def _after_start_many(jobs: list[Any], current: list[Any] | None) -> list[bool]:
        """Each job's outcome after ``start_many``: True when it is started (still held
        by its token), False when its handle no longer held it (and lets go)."""
        outcomes = []
        for job in jobs:
            held = job._token is not None and (current is None or (job.id, job._token) in current)
            if held:
                job._data.pop("prefetched", None)
            else:
                job._token = None
            outcomes.append(held)
        return outcomes

    @staticmethod
    def _after_fenced(job: JobData, doc: Mapping[str, Any]) -> dict[str, Any]:
        """Take the reply of a fenced update: fresh metadata; keep the token if still held.

        Returns the job document as it is now (what ``progress()`` and ``release()``
        return; 0.7.2 returned the document found by its find-and-modify).
        """
        token = job._token
        attempts = job.attempts
        job._update(doc)
        if doc.get("lease_token") == token:
            job._token = token
        else:  # error() (a failed attempt, counted) or release()
            job._token = None
            job._settled = "returned"
            failed = doc.get("state") == "failed" or job.attempts > attempts
            job._let_go = "failed" if failed else "released"
        return job.data

    @staticmethod
    def _lease_lost_in_session(job: JobData, action: str) -> LeaseLost:
        return LeaseLost(
            f"cannot {action} job {job.id} in this transaction: this handle no longer "
            "holds it (its lease expired and it was claimed again, or it was settled)"
        )

    @staticmethod
    def _lease_lost(job: JobData, action: str, current: Mapping[str, Any] | None) -> LeaseLost:
        """The error for a fenced operation that matched nothing; the handle lets go."""
        job._token = None
        if current is None:
            job._let_go = "gone"
        elif isinstance(current.get("lease_token"), str) or current.get("state") == "failed":
            job._let_go = "lost"
        else:
            job._let_go = "free"
        return LeaseLost(lease_lost_message(job.id, action, current))

    def _error_update(self, message: object) -> list[dict[str, Any]]:
        if message is not None and not isinstance(message, str):
            message = str(message)
        if message is not None and len(message) > MAX_ERROR_CHARS:
            # A huge message would push the job past the document size limit and
            # the failure could not be recorded; keep its start and its end.
            half = MAX_ERROR_CHARS // 2
            cut = len(message) - 2 * half
            message = f"{message[:half]}\n[... {cut} characters cut ...]\n{message[-half:]}"
        return ops.fail_update(message, self.max_attempts, self.retry, self.retry.draw_jitter())

    @staticmethod
    def _keep_ms(keep: object) -> int:
        """``keep`` (seconds or timedelta) in ms; 0 means delete the job instead."""
        seconds = check_seconds("keep", keep, allow_zero=True)
        return round(seconds * 1000)

    @staticmethod
    def _complete_update(result: object, keep: object) -> list[dict[str, Any]] | None:
        """``complete(result=, keep=)``: the kept-result update, or None to delete."""
        if keep is None:
            if result is not None:
                raise InvalidArgument(
                    "complete(result=...) needs keep=SECONDS (how long to keep the result); "
                    "without keep a completed job is deleted"
                )
            return None
        keep_ms = QueueCore._keep_ms(keep)
        if keep_ms == 0:
            return None
        check_bson_value("the result", result)
        return ops.complete_update(result, keep_ms)

    def _hand_back_update(
        self, message: object, max_passes: object, delay: object
    ) -> list[dict[str, Any]]:
        if not isinstance(message, str):
            raise InvalidArgumentType(f"message must be a str, got {type(message).__name__}")
        passes = check_positive_int("max_passes", max_passes)
        delay_ms = round(check_seconds("delay", delay, allow_zero=True) * 1000)
        return ops.pass_update(passes, message, delay_ms)

    def _record_session_update(self, session_id: object) -> list[dict[str, Any]]:
        if not isinstance(session_id, Mapping):
            raise InvalidArgumentType(
                f"session_id must be a session's lsid document (session.session_id), "
                f"got {type(session_id).__name__}"
            )
        return ops.record_session_update(dict(session_id), self._config.lease_ms)

    def _heartbeat_update(self) -> list[dict[str, Any]]:
        return ops.heartbeat_update(self._config.lease_ms)

    def _progress_update(self, count: object) -> list[dict[str, Any]]:
        if isinstance(count, bool) or not isinstance(count, int):
            raise InvalidArgumentType(f"count must be an int, got {type(count).__name__}")
        if not INT64_MIN <= count <= INT64_MAX:
            raise InvalidArgument(f"count must fit in a signed 64-bit integer, got {count}")
        return ops.progress_update(count, self._config.lease_ms)

    # ------------------------------------------------------------------ inspection

    @staticmethod
    def _is_missing_index(exc: pymongo.errors.OperationFailure) -> bool:
        """A hinted count met no such index: the collection was dropped (by ``clear()``
        elsewhere) after this queue made its indexes; make them again and retry."""
        return exc.code == _BAD_VALUE and "hint" in str(exc)

    @staticmethod
    def _status(job_id: Any, doc: Mapping[str, Any] | None, now: datetime) -> JobStatus:
        return job_status(job_id, doc, now)

    @staticmethod
    def _listing_query(
        state: object,
        now: datetime,
        key: object,
        locked_by: object,
        priority: object,
        after: object,
    ) -> dict[str, Any]:
        """The filter of ``jobs()``, after checking every argument."""
        if not isinstance(state, str):
            raise InvalidArgumentType(f"state must be a str, got {type(state).__name__}")
        for name, value in (("key", key), ("locked_by", locked_by)):
            if value is not None and not isinstance(value, str):
                raise InvalidArgumentType(f"{name} must be a str, got {type(value).__name__}")
        if priority is not None:
            priority = check_priority(priority)
        if isinstance(after, JobData):
            after = ops.listing_cursor(after.data)
        elif after is not None and not isinstance(after, str):
            raise InvalidArgumentType(
                "after must be a job from a previous listing or its listing cursor (a str), "
                f"got {type(after).__name__}"
            )
        return ops.listing_filter(
            state,
            now,
            key=key,  # type: ignore[arg-type]
            locked_by=locked_by,  # type: ignore[arg-type]
            priority=priority,
            after=after,
        )

    @staticmethod
    def _check_limit(limit: object) -> int | None:
        return None if limit is None else check_positive_int("limit", limit)

    @staticmethod
    def _snapshot(job: J) -> J:
        """A read-only handle: it shows the job but holds no claim on it."""
        job._token = None
        return job

    # ------------------------------------------------------------------ maintenance

    def _expire_update(self) -> list[dict[str, Any]]:
        return ops.expire_update(self.max_attempts, self.retry, self.retry.draw_jitter())

    @staticmethod
    def _id_value(job_id: Any) -> Any:
        """A job id from outside: a 24-hex string names the ObjectId it spells.

        Job ids are ObjectIds, shown as strings by the CLI, the dashboard and logs;
        ``get("65f...")`` must find that job, not miss it. Other ids are taken as
        they are (always as values, never as query operators: see ``ops.by_id``).
        """
        if isinstance(job_id, str) and len(job_id) == 24 and ObjectId.is_valid(job_id):
            return ObjectId(job_id)
        return job_id

    @classmethod
    def _requeue_target(cls, job: object) -> Any:
        """The id ``requeue`` acts on: a handle's job id, or the argument itself."""
        return job.id if isinstance(job, JobData) else cls._id_value(job)

    @classmethod
    def _cancel_target(cls, job: object) -> Any:
        if isinstance(job, JobData):
            return job.id
        if job is None:
            raise InvalidArgumentType("cancel needs a job or a job id, got None")
        return cls._id_value(job)

    def _requeue_writes(self, docs: list[Mapping[str, Any]]) -> list[Any]:
        """``requeue()`` of every failed job in ``docs`` (their ``_id`` and partition)."""
        if self._partitions == 1:
            return ops.requeue_writes([doc["_id"] for doc in docs])
        return [
            UpdateOne(self._of_job(ops.requeue_filter(doc["_id"]), doc), ops.requeue_update())
            for doc in docs
        ]

    @staticmethod
    def _requeued_despite(exc: pymongo.errors.BulkWriteError) -> int:
        """How many jobs a requeue bulk write changed when some keys collided.

        Re-raises unless every write error is a duplicate key (a ready job already
        holds that job's key: it stays failed).
        """
        details = exc.details or {}
        errors = details.get("writeErrors", [])
        if details.get("writeConcernErrors") or any(
            e.get("code") not in _DUPLICATE_KEY_CODES for e in errors
        ):
            raise exc
        return int(details.get("nModified", 0))

    @staticmethod
    def _requeue_conflict(job_id: Any) -> DuplicateKeyConflict:
        return DuplicateKeyConflict(
            f"cannot requeue job {job_id}: a waiting or running job already has its key"
        )
