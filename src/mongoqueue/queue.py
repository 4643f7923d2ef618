"""MongoQueue: the synchronous queue on a pymongo ``Collection``.

Each public method validates its input, then sends the documents that
:mod:`mongoqueue.operations` builds. Every state change of a job is one atomic
server operation; see that module for the storage contract.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, NoReturn

import pymongo.errors
from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.collection import Collection

from . import operations as ops
from .clock import ServerClock
from .errors import (
    DuplicateKeyConflict,
    IndexConflict,
    InvalidArgument,
    InvalidArgumentType,
    LeaseLost,
    driver_errors,
)
from .job import Job, finished_handle_message, lease_lost_message
from .retry import RetryPolicy
from .validation import (
    DEFAULT_MAX_DOCUMENT_BYTES,
    check_consumer_id,
    check_delay,
    check_key,
    check_positive_int,
    check_priority,
    check_seconds,
    encode_payload,
)
from .waiting import (
    CHANGE_STREAMS_UNSUPPORTED,
    RECHECK_SECONDS,
    WAKE_SLACK_SECONDS,
    Deadline,
    PollBackoff,
)

__all__ = ["DEFAULT_RETRY", "MongoQueue"]

#: The default retry policy: full-jitter exponential backoff from 1 s up to 5 min.
DEFAULT_RETRY = RetryPolicy()

#: A claim that meets expired leases records each expiry and tries again; it
#: gives up (returning None) after this many in one call.
MAX_EXPIRIES_PER_CLAIM = 100

#: Largest batch ``next_batch`` claims at once.
MAX_BATCH = 10_000

#: How many times ``put(key=...)`` retries when the job holding the key finished
#: between its insert and its lookup.
_KEY_RETRIES = 5


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

    def claim_update(self, token: str | dict[str, Any]) -> list[dict[str, Any]]:
        return ops.claim_update(
            token,
            self.consumer_id,
            self.lease_ms,
            self.max_attempts,
            self.retry,
            self.retry.draw_jitter(),
        )


class MongoQueue:
    """A job queue in one MongoDB collection.

    ``MongoQueue(collection, consumer_id, timeout=300, max_attempts=3)``:
    ``timeout`` is the lease in seconds: how long a consumer may hold a job
    without ``progress()`` before the job is delivered again. A job that fails
    ``max_attempts`` times (errors or expired leases) is *failed* and kept until
    requeued or purged. ``retry`` sets the backoff between deliveries.
    """

    def __init__(
        self,
        collection: Collection[Any],
        consumer_id: str,
        timeout: float = 300,
        max_attempts: int = 3,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        if not isinstance(collection, Collection):
            raise InvalidArgumentType(
                "collection must be a pymongo Collection (for example "
                f"MongoClient(uri).mydb.jobs), got {type(collection).__name__}"
            )
        self._config = QueueConfig(consumer_id, timeout, max_attempts, retry)
        self.collection = collection
        self._clock = ServerClock()
        self._max_document_bytes = DEFAULT_MAX_DOCUMENT_BYTES
        self._indexes_ready = False
        self._change_streams = True

    # ------------------------------------------------------------------ settings

    @property
    def consumer_id(self) -> str:
        return self._config.consumer_id

    @property
    def timeout(self) -> float:
        return self._config.timeout

    @property
    def max_attempts(self) -> int:
        return self._config.max_attempts

    @property
    def retry(self) -> RetryPolicy:
        return self._config.retry

    def __repr__(self) -> str:
        return (
            f"<MongoQueue {self.collection.full_name} consumer={self.consumer_id!r} "
            f"timeout={self.timeout}s max_attempts={self.max_attempts}>"
        )

    # ------------------------------------------------------------------ plumbing

    def ensure_indexes(self) -> None:
        """Create the queue's indexes (idempotent; also done on first use)."""
        with driver_errors():
            try:
                self.collection.create_indexes(ops.indexes())
            except pymongo.errors.OperationFailure as exc:
                if exc.code in (85, 86):  # IndexOptionsConflict, IndexKeySpecsConflict
                    raise IndexConflict(
                        f"an index named like one of mongoqueue's exists on "
                        f"{self.collection.full_name} with a different definition: "
                        f"{exc}. Drop it and let the queue create its own."
                    ) from exc
                raise
        self._indexes_ready = True

    def _ensure_ready(self) -> None:
        if not self._indexes_ready:
            self.ensure_indexes()

    def _now(self) -> datetime:
        """The server's current time, estimated (see :mod:`mongoqueue.clock`)."""
        if self._clock.needs_sync():
            sent_at = time.monotonic()
            with driver_errors():
                reply = self.collection.database.command("hello")
            self._clock.record(reply["localTime"], sent_at, time.monotonic())
            self._max_document_bytes = int(
                reply.get("maxBsonObjectSize", DEFAULT_MAX_DOCUMENT_BYTES)
            )
        return self._clock.now()

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
        priority = check_priority(priority)
        delay_seconds, run_at_utc = check_delay(delay, run_at)
        if max_attempts is not None:
            max_attempts = check_positive_int("max_attempts", max_attempts)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidArgumentType(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        scheduled = run_at_utc if run_at_utc is not None else now + timedelta(seconds=delay_seconds)
        # A job due at once is visible from a lower bound of the server's time, so a
        # consumer whose clock estimate is less ahead than ours still sees it as due.
        due_now = run_at_utc is None and delay_seconds == 0
        return ops.new_job(
            ObjectId(),
            encode_payload(payload, self._max_document_bytes),
            priority=priority,
            created_at=now,
            scheduled_at=scheduled,
            visible_at=now - self._clock.spread if due_now else None,
            key=check_key(key),
            max_attempts=max_attempts,
            retry=retry,
        )

    def put(
        self,
        payload: Mapping[str, Any],
        priority: int = 0,
        *,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        key: str | None = None,
        max_attempts: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> Any:
        """Add a job and return its id.

        ``delay`` (seconds or timedelta) or ``run_at`` (timezone-aware datetime)
        hold the job back until then. With ``key``, while a job with that key is
        waiting or running no second one is created and its id is returned.
        ``max_attempts`` and ``retry`` override the queue's settings for this job.
        """
        doc = self._new_job(payload, priority, delay, run_at, key, max_attempts, retry, self._now())
        self._ensure_ready()
        with driver_errors():
            for _ in range(_KEY_RETRIES):
                try:
                    self.collection.insert_one(doc)
                    return doc["_id"]
                except pymongo.errors.DuplicateKeyError:
                    if "key" not in doc:
                        raise
                existing = self.collection.find_one(ops.active_key_filter(doc["key"]), {"_id": 1})
                if existing is not None:
                    return existing["_id"]
        raise DuplicateKeyConflict(
            f"could not put a job with key {doc['key']!r}: jobs with that key kept "
            "finishing and reappearing while we tried; try again"
        )

    def put_many(
        self,
        payloads: Iterable[Mapping[str, Any]],
        priority: int = 0,
        *,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> list[Any]:
        """Add many jobs in as few round trips as the driver allows; return their ids.

        Every payload is checked first: a bad one fails the call before anything
        is written. Jobs keep the order of ``payloads`` (first in, first out).
        """
        if isinstance(payloads, Mapping) or not isinstance(payloads, Iterable):
            raise InvalidArgumentType(
                "payloads must be an iterable of mappings (for example a list of dicts)"
            )
        now = self._now()
        docs = []
        for index, payload in enumerate(payloads):
            try:
                docs.append(
                    self._new_job(payload, priority, delay, run_at, None, max_attempts, retry, now)
                )
            except (InvalidArgument, InvalidArgumentType) as exc:
                raise type(exc)(f"payloads[{index}]: {exc}") from exc
        if not docs:
            return []
        self._ensure_ready()
        with driver_errors():
            self.collection.insert_many(docs, ordered=True)
        return [doc["_id"] for doc in docs]

    # ------------------------------------------------------------------ claim

    def _claim(self) -> Job | None:
        """One claim: the best claimable job, or None.

        The claim is served by ``ops.CLAIM_INDEX`` (equality on state, then the
        sort, then the visible_at range): see that index's comment.
        """
        self._ensure_ready()
        with driver_errors():
            for _ in range(MAX_EXPIRIES_PER_CLAIM):
                token = str(ObjectId())
                doc = self.collection.find_one_and_update(
                    ops.claim_filter(self._now()),
                    self._config.claim_update(token),
                    sort=ops.CLAIM_SORT,
                    return_document=ReturnDocument.AFTER,
                )
                if doc is None:
                    return None
                if doc.get("lease_token") == token:
                    return Job(self, doc)
                # We met an expired lease and recorded it; claim again.
        return None

    def next(self, wait: float | None = None) -> Job | None:
        """Claim the next job: highest priority first, then first in first out.

        Returns None when no job is available. With ``wait`` (seconds), blocks
        until a job becomes available or the time is up: woken by a change
        stream where the server has them, else by polling.
        """
        if wait is not None:
            wait = check_seconds("wait", wait, allow_zero=True)
        job = self._claim()
        if job is not None or not wait:
            return job
        return self._wait_and_claim(Deadline(wait))

    def _wait_and_claim(self, deadline: Deadline) -> Job | None:
        if self._change_streams:
            try:
                with driver_errors():
                    while True:
                        # A getMore's await time is fixed when the stream opens: when less
                        # than that is left, reopen with the time left rather than sleep.
                        block = min(RECHECK_SECONDS, deadline.remaining())
                        with self.collection.watch(
                            ops.wake_pipeline(), max_await_time_ms=max(1, int(block * 1000))
                        ) as stream:
                            # Opened before claiming again, so no job put meanwhile is missed.
                            while True:
                                job = self._claim()
                                if job is not None or deadline.expired():
                                    return job
                                if deadline.remaining() + WAKE_SLACK_SECONDS < block:
                                    break
                                stream.try_next()  # returns early on a wake-up event
            except pymongo.errors.OperationFailure as exc:
                if exc.code not in CHANGE_STREAMS_UNSUPPORTED:
                    raise
                self._change_streams = False
        backoff = PollBackoff()
        while True:
            job = self._claim()
            if job is not None or deadline.expired():
                return job
            time.sleep(backoff.next_interval(deadline.remaining()))

    def next_batch(self, n: int) -> list[Job]:
        """Claim up to ``n`` jobs in three round trips; each gets its own token and lease."""
        n = check_positive_int("n", n)
        if n > MAX_BATCH:
            raise InvalidArgument(f"n must be at most {MAX_BATCH}, got {n}")
        self._ensure_ready()
        with driver_errors():
            now = self._now()
            ids = [
                doc["_id"]
                for doc in self.collection.find(
                    ops.claim_filter(now), {"_id": 1}, sort=ops.CLAIM_SORT, limit=n
                )
            ]
            if not ids:
                return []
            prefix = str(ObjectId())
            self.collection.update_many(
                {**ops.claim_filter(now), "_id": {"$in": ids}},
                self._config.claim_update(ops.batch_token(prefix)),
            )
            claimed = {
                doc["_id"]: doc
                for doc in self.collection.find(
                    {"_id": {"$in": ids}, "lease_token": {"$in": ops.batch_tokens(prefix, ids)}}
                )
            }
        return [Job(self, claimed[i]) for i in ids if i in claimed]

    # ------------------------------------------------------------------ job handle

    def _fenced(self, job: Job, action: str, update: list[dict[str, Any]]) -> None:
        """Apply ``update`` to ``job`` only while ``job`` still holds its lease."""
        if job._token is None:
            raise LeaseLost(finished_handle_message(job.id, action))
        with driver_errors():
            doc = self.collection.find_one_and_update(
                ops.held(job.id, job._token),
                update,
                projection=ops.METADATA_PROJECTION,
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                self._lease_lost(job, action)
        job._update(doc)
        job._token = doc.get("lease_token") if doc.get("lease_token") == job._token else None

    def _lease_lost(self, job: Job, action: str) -> NoReturn:
        job._token = None
        current = self.collection.find_one({"_id": job.id}, ops.METADATA_PROJECTION)
        raise LeaseLost(lease_lost_message(job.id, action, current))

    def _complete(self, job: Job) -> None:
        if job._token is None:
            raise LeaseLost(finished_handle_message(job.id, "complete"))
        with driver_errors():
            if self.collection.delete_one(ops.held(job.id, job._token)).deleted_count == 0:
                self._lease_lost(job, "complete")
        job._token = None

    def _error(self, job: Job, message: str | None) -> None:
        if message is not None and not isinstance(message, str):
            message = str(message)
        self._fenced(
            job,
            "record an error for",
            ops.fail_update(message, self.max_attempts, self.retry, self.retry.draw_jitter()),
        )

    def _progress(self, job: Job, count: int) -> None:
        if isinstance(count, bool) or not isinstance(count, int):
            raise InvalidArgumentType(f"count must be an int, got {type(count).__name__}")
        self._fenced(job, "report progress for", ops.progress_update(count, self._config.lease_ms))

    def _heartbeat(self, job: Job) -> None:
        self._fenced(job, "extend the lease of", ops.heartbeat_update(self._config.lease_ms))

    def _release(self, job: Job) -> None:
        self._fenced(job, "release", ops.release_update())

    # ------------------------------------------------------------------ inspection

    def size(self) -> int:
        """Jobs in the queue: waiting, delayed or running (not failed)."""
        with driver_errors():
            return self.collection.count_documents(ops.size_filter())

    def stats(self) -> dict[str, int]:
        """Counts by state, from one aggregation.

        ``available`` (claimable now), ``delayed`` (waiting for their time or a
        backoff), ``locked`` (held; ``expired`` of them past their lease),
        ``failed`` (also as ``errors``, the original's name) and ``total``.
        """
        with driver_errors():
            rows = list(self.collection.aggregate(ops.stats_pipeline(self._now())))
        counts = {key: int(rows[0][key]) if rows else 0 for key in ops.STATS_KEYS}
        counts["errors"] = counts["failed"]
        return counts

    def get(self, job_id: Any) -> Job | None:
        """A snapshot of one job (not a claim), or None."""
        with driver_errors():
            doc = self.collection.find_one({"_id": job_id})
        return None if doc is None else _snapshot(self, doc)

    def failed(self, limit: int | None = None) -> list[Job]:
        """Failed jobs (snapshots with their last error), oldest first."""
        if limit is not None:
            limit = check_positive_int("limit", limit)
        with driver_errors():
            cursor = self.collection.find(ops.failed_filter()).sort("_id", 1)
            if limit is not None:
                cursor = cursor.limit(limit)
            return [_snapshot(self, doc) for doc in cursor]

    # ------------------------------------------------------------------ maintenance

    def repair(self) -> int:
        """Free every expired lease at once (each counts as a failed delivery).

        ``next()`` reclaims expired leases by itself; this is a bulk clean-up.
        Returns how many leases were freed.
        """
        self._ensure_ready()
        with driver_errors():
            result = self.collection.update_many(
                ops.expired_filter(self._now()),
                ops.expire_update(self.max_attempts, self.retry, self.retry.draw_jitter()),
            )
        return result.modified_count

    def requeue(self, job: Job | Any = None) -> int:
        """Put failed jobs back in the queue with their attempts reset.

        ``job`` is a Job, or a job id; with no argument every failed job is
        requeued. Returns how many were requeued. A failed job whose key is used
        by a waiting or running job stays failed (``DuplicateKeyConflict`` when
        one job was named).
        """
        job_id = job.id if isinstance(job, Job) else job
        self._ensure_ready()
        with driver_errors():
            if job_id is not None:
                try:
                    result = self.collection.update_one(
                        ops.requeue_filter(job_id), ops.requeue_update()
                    )
                except pymongo.errors.DuplicateKeyError as exc:
                    raise DuplicateKeyConflict(
                        f"cannot requeue job {job_id}: a waiting or running job already has its key"
                    ) from exc
                return result.modified_count
            try:
                return self.collection.update_many(
                    ops.requeue_filter(), ops.requeue_update()
                ).modified_count
            except pymongo.errors.DuplicateKeyError:
                pass
            # Some keys collide: requeue one by one, leaving the colliding ones failed.
            count = 0
            for doc in self.collection.find(ops.requeue_filter(), {"_id": 1}):
                try:
                    count += self.collection.update_one(
                        ops.requeue_filter(doc["_id"]), ops.requeue_update()
                    ).modified_count
                except pymongo.errors.DuplicateKeyError:
                    continue
            return count

    def purge_failed(self) -> int:
        """Delete every failed job; returns how many."""
        with driver_errors():
            return self.collection.delete_many(ops.failed_filter()).deleted_count

    drop_max_attempts = purge_failed
    """The original mongoqueue's name for :meth:`purge_failed`."""

    def clear(self) -> int:
        """Delete every job (the indexes stay). Returns how many were deleted."""
        with driver_errors():
            return self.collection.delete_many({}).deleted_count


def _snapshot(queue: MongoQueue, doc: Mapping[str, Any]) -> Job:
    """A read-only handle: it shows the job but holds no claim on it."""
    job = Job(queue, doc)
    job._token = None
    return job
