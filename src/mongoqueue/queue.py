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
from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.collection import Collection

from . import operations as ops
from ._core import (
    DEFAULT_RETRY,
    KEY_RETRIES,
    MAX_BATCH,
    MAX_EXPIRIES_PER_CLAIM,
    QueueConfig,
    QueueCore,
    check_collection,
)
from .errors import OperationFailed, driver_errors
from .job import Job
from .retry import RetryPolicy
from .waiting import (
    CHANGE_STREAMS_UNSUPPORTED,
    RECHECK_SECONDS,
    WAKE_SLACK_SECONDS,
    Deadline,
    PollBackoff,
)

__all__ = ["DEFAULT_RETRY", "MAX_BATCH", "MAX_EXPIRIES_PER_CLAIM", "MongoQueue", "QueueConfig"]


class MongoQueue(QueueCore):
    """A job queue in one MongoDB collection.

    ``MongoQueue(collection, consumer_id, timeout=300, max_attempts=3)``:
    ``timeout`` is the lease in seconds: how long a consumer may hold a job
    without ``progress()`` before the job is delivered again. A job that fails
    ``max_attempts`` times (errors or expired leases) is *failed* and kept until
    requeued or purged. ``retry`` sets the backoff between deliveries.
    :class:`~mongoqueue.AsyncMongoQueue` is its asyncio twin.
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
        check_collection(collection, Collection, AsyncCollection, "MongoQueue")
        super().__init__(consumer_id, timeout, max_attempts, retry)
        self.collection = collection

    def __repr__(self) -> str:
        return self._describe(self.collection.full_name)

    # ------------------------------------------------------------------ plumbing

    def ensure_indexes(self) -> None:
        """Create the queue's indexes (idempotent; also done on first use)."""
        with driver_errors():
            try:
                self.collection.create_indexes(ops.indexes())
            except pymongo.errors.OperationFailure as exc:
                conflict = self._index_conflict(exc, self.collection.full_name)
                if conflict is None:
                    raise
                raise conflict from exc
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
            self._record_hello(reply, sent_at, time.monotonic())
        return self._clock.now()

    # ------------------------------------------------------------------ put

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
            for _ in range(KEY_RETRIES):
                try:
                    self.collection.insert_one(doc)
                    self.events.add("put")
                    return doc["_id"]
                except pymongo.errors.DuplicateKeyError:
                    if "key" not in doc:
                        raise
                existing = self.collection.find_one(ops.active_key_filter(doc["key"]), {"_id": 1})
                if existing is not None:
                    return existing["_id"]
        raise self._key_conflict(doc["key"])

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
        payloads = self._check_payloads(payloads)
        docs = self._new_jobs(payloads, priority, delay, run_at, max_attempts, retry, self._now())
        if not docs:
            return []
        self._ensure_ready()
        with driver_errors():
            self.collection.insert_many(docs, ordered=True)
        self.events.add("put", len(docs))
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
                token = self._new_token()
                doc = self.collection.find_one_and_update(
                    ops.claim_filter(self._now()),
                    self._config.claim_update(token),
                    sort=ops.CLAIM_SORT,
                    return_document=ReturnDocument.AFTER,
                )
                if doc is None:
                    return None
                if self._is_own_claim(doc, token):
                    return Job(self, doc)
                # We met an expired lease and recorded it; claim again.
                self.events.add("lease_expiries")
        return None

    def next(self, wait: float | None = None) -> Job | None:
        """Claim the next job: highest priority first, then first in first out.

        Returns None when no job is available. With ``wait`` (seconds), blocks
        until a job becomes available or the time is up: woken by a change
        stream where the server has them, else by polling.
        """
        deadline = self._wait_deadline(wait)
        job = self._claim()
        if job is not None or deadline is None:
            return job
        return self._wait_and_claim(deadline)

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
            except OperationFailed as exc:
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
        n = self._check_batch_size(n)
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
            prefix = self._new_token()
            self.collection.update_many(*self._batch_update(now, ids, prefix))
            docs = self.collection.find(self._batch_fetch_filter(ids, prefix))
            return [Job(self, doc) for doc in self._in_claim_order(ids, docs)]

    # ------------------------------------------------------------------ job handle

    def _fenced(self, job: Job, action: str, update: list[dict[str, Any]]) -> None:
        """Apply ``update`` to ``job`` only while ``job`` still holds its lease."""
        token = self._token_of(job, action)
        with driver_errors():
            doc = self.collection.find_one_and_update(
                ops.held(job.id, token),
                update,
                projection=ops.METADATA_PROJECTION,
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                self._raise_lease_lost(job, action)
        self._after_fenced(job, doc)

    def _raise_lease_lost(self, job: Job, action: str) -> NoReturn:
        current = self.collection.find_one({"_id": job.id}, ops.METADATA_PROJECTION)
        raise self._lease_lost(job, action, current)

    def _complete(self, job: Job) -> None:
        token = self._token_of(job, "complete")
        with driver_errors():
            if self.collection.delete_one(ops.held(job.id, token)).deleted_count == 0:
                self._raise_lease_lost(job, "complete")
        job._token = None

    def _error(self, job: Job, message: str | None) -> None:
        self._fenced(job, "record an error for", self._error_update(message))

    def _progress(self, job: Job, count: int) -> None:
        self._fenced(job, "report progress for", self._progress_update(count))

    def _heartbeat(self, job: Job) -> None:
        self._fenced(job, "extend the lease of", self._heartbeat_update())

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
        return self._stats_counts(rows)

    def get(self, job_id: Any) -> Job | None:
        """A snapshot of one job (not a claim), or None."""
        with driver_errors():
            doc = self.collection.find_one(ops.by_id(job_id))
        return None if doc is None else self._snapshot(Job(self, doc))

    def failed(self, limit: int | None = None) -> list[Job]:
        """Failed jobs (snapshots with their last error), oldest first."""
        limit = self._check_limit(limit)
        with driver_errors():
            cursor = self.collection.find(ops.failed_filter()).sort("_id", 1)
            if limit is not None:
                cursor = cursor.limit(limit)
            return [self._snapshot(Job(self, doc)) for doc in cursor]

    # ------------------------------------------------------------------ maintenance

    def repair(self) -> int:
        """Free every expired lease at once (each counts as a failed delivery).

        ``next()`` reclaims expired leases by itself; this is a bulk clean-up.
        Returns how many leases were freed.
        """
        self._ensure_ready()
        with driver_errors():
            result = self.collection.update_many(
                ops.expired_filter(self._now()), self._expire_update()
            )
        self.events.add("lease_expiries", result.modified_count)
        return result.modified_count

    def requeue(self, job: Job | Any = None) -> int:
        """Put failed jobs back in the queue with their attempts reset.

        ``job`` is a Job, or a job id; with no argument every failed job is
        requeued. Returns how many were requeued. A failed job whose key is used
        by a waiting or running job stays failed (``DuplicateKeyConflict`` when
        one job was named).
        """
        job_id = self._requeue_target(job)
        self._ensure_ready()
        with driver_errors():
            if job_id is not None:
                try:
                    result = self.collection.update_one(
                        ops.requeue_filter(job_id), ops.requeue_update()
                    )
                except pymongo.errors.DuplicateKeyError as exc:
                    raise self._requeue_conflict(job_id) from exc
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

    def cancel(self, job: Job | Any) -> bool:
        """Delete a job that is waiting (due or delayed, not held); True if it was.

        ``job`` is a Job or a job id. A running or failed job is left alone: the
        delete is filtered on the waiting state, so it cannot race a claim.
        """
        job_id = self._cancel_target(job)
        with driver_errors():
            return self.collection.delete_one(ops.cancel_filter(job_id)).deleted_count == 1

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
