"""AsyncMongoQueue and AsyncJob: the asyncio twins of MongoQueue and Job.

They run on pymongo's native asyncio client (``pymongo.AsyncMongoClient``,
pymongo 4.9+); no threads, no Motor. Each method mirrors its sync twin line for
line: the decisions (validation, documents, replies, errors) come from the
shared core in :mod:`mongoqueue._core` and :mod:`mongoqueue.operations`, and
only the server calls differ (``await``). A test compares the public names
and signatures of the twins so they cannot drift apart.

A claim whose task is cancelled after the server applied it keeps the job held
until its lease expires, exactly like a consumer that crashed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, NoReturn

import pymongo.errors
from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.collection import Collection

from . import operations as ops
from ._core import (
    DEFAULT_RETRY,
    KEY_RETRIES,
    MAX_EXPIRIES_PER_CLAIM,
    QueueCore,
    check_collection,
)
from .errors import MongoQueueError, OperationFailed, driver_errors
from .job import JobData, exit_outcome, log_unrecorded_failure
from .retry import RetryPolicy
from .waiting import (
    CHANGE_STREAMS_UNSUPPORTED,
    RECHECK_SECONDS,
    WAKE_SLACK_SECONDS,
    Deadline,
    PollBackoff,
)

__all__ = ["AsyncJob", "AsyncMongoQueue"]


class AsyncMongoQueue(QueueCore):
    """A job queue in one MongoDB collection, for asyncio.

    ``AsyncMongoQueue(AsyncMongoClient(uri).mydb.jobs, consumer_id, timeout=300,
    max_attempts=3)``: the same settings, methods, semantics and errors as
    :class:`~mongoqueue.MongoQueue`, with every method a coroutine. Sync and
    async consumers may share one collection.
    """

    def __init__(
        self,
        collection: AsyncCollection[Any],
        consumer_id: str,
        timeout: float = 300,
        max_attempts: int = 3,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        check_collection(collection, AsyncCollection, Collection, "AsyncMongoQueue")
        super().__init__(consumer_id, timeout, max_attempts, retry)
        self.collection = collection

    def __repr__(self) -> str:
        return self._describe(self.collection.full_name)

    # ------------------------------------------------------------------ plumbing

    async def ensure_indexes(self) -> None:
        """Create the queue's indexes (idempotent; also done on first use)."""
        with driver_errors():
            try:
                await self.collection.create_indexes(ops.indexes())
            except pymongo.errors.OperationFailure as exc:
                conflict = self._index_conflict(exc, self.collection.full_name)
                if conflict is None:
                    raise
                raise conflict from exc
        self._indexes_ready = True

    async def _ensure_ready(self) -> None:
        if not self._indexes_ready:
            await self.ensure_indexes()

    async def _now(self) -> datetime:
        """The server's current time, estimated (see :mod:`mongoqueue.clock`)."""
        if self._clock.needs_sync():
            sent_at = time.monotonic()
            with driver_errors():
                reply = await self.collection.database.command("hello")
            self._record_hello(reply, sent_at, time.monotonic())
        return self._clock.now()

    # ------------------------------------------------------------------ put

    async def put(
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
        """Add a job and return its id (see :meth:`MongoQueue.put`)."""
        now = await self._now()
        doc = self._new_job(payload, priority, delay, run_at, key, max_attempts, retry, now)
        await self._ensure_ready()
        with driver_errors():
            for _ in range(KEY_RETRIES):
                try:
                    await self.collection.insert_one(doc)
                    self.events.add("put")
                    return doc["_id"]
                except pymongo.errors.DuplicateKeyError:
                    if "key" not in doc:
                        raise
                existing = await self.collection.find_one(
                    ops.active_key_filter(doc["key"]), {"_id": 1}
                )
                if existing is not None:
                    return existing["_id"]
        raise self._key_conflict(doc["key"])

    async def put_many(
        self,
        payloads: Iterable[Mapping[str, Any]],
        priority: int = 0,
        *,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> list[Any]:
        """Add many jobs in one ordered batch; return their ids (see ``MongoQueue.put_many``)."""
        payloads = self._check_payloads(payloads)
        now = await self._now()
        docs = self._new_jobs(payloads, priority, delay, run_at, max_attempts, retry, now)
        if not docs:
            return []
        await self._ensure_ready()
        with driver_errors():
            await self.collection.insert_many(docs, ordered=True)
        self.events.add("put", len(docs))
        return [doc["_id"] for doc in docs]

    # ------------------------------------------------------------------ claim

    async def _claim(self) -> AsyncJob | None:
        """One claim: the best claimable job, or None (see ``MongoQueue._claim``)."""
        await self._ensure_ready()
        with driver_errors():
            for _ in range(MAX_EXPIRIES_PER_CLAIM):
                token = self._new_token()
                doc = await self.collection.find_one_and_update(
                    ops.claim_filter(await self._now()),
                    self._config.claim_update(token),
                    sort=ops.CLAIM_SORT,
                    return_document=ReturnDocument.AFTER,
                )
                if doc is None:
                    return None
                if self._is_own_claim(doc, token):
                    return AsyncJob(self, doc)
                # We met an expired lease and recorded it; claim again.
                self.events.add("lease_expiries")
        return None

    async def next(self, wait: float | None = None) -> AsyncJob | None:
        """Claim the next job, or None; with ``wait`` (seconds), wait for one that long.

        Waiting suspends only this task: a change stream wakes it where the
        server has them, else it polls (see :meth:`MongoQueue.next`).
        """
        deadline = self._wait_deadline(wait)
        job = await self._claim()
        if job is not None or deadline is None:
            return job
        return await self._wait_and_claim(deadline)

    async def _wait_and_claim(self, deadline: Deadline) -> AsyncJob | None:
        if self._change_streams:
            try:
                with driver_errors():
                    while True:
                        # A getMore's await time is fixed when the stream opens: when less
                        # than that is left, reopen with the time left rather than sleep.
                        block = min(RECHECK_SECONDS, deadline.remaining())
                        stream = await self.collection.watch(
                            ops.wake_pipeline(), max_await_time_ms=max(1, int(block * 1000))
                        )
                        async with stream:
                            # Opened before claiming again, so no job put meanwhile is missed.
                            while True:
                                job = await self._claim()
                                if job is not None or deadline.expired():
                                    return job
                                if deadline.remaining() + WAKE_SLACK_SECONDS < block:
                                    break
                                await stream.try_next()  # returns early on a wake-up event
            except OperationFailed as exc:
                if exc.code not in CHANGE_STREAMS_UNSUPPORTED:
                    raise
                self._change_streams = False
        backoff = PollBackoff()
        while True:
            job = await self._claim()
            if job is not None or deadline.expired():
                return job
            await asyncio.sleep(backoff.next_interval(deadline.remaining()))

    async def next_batch(self, n: int) -> list[AsyncJob]:
        """Claim up to ``n`` jobs in three round trips; each gets its own token and lease."""
        n = self._check_batch_size(n)
        await self._ensure_ready()
        with driver_errors():
            now = await self._now()
            cursor = self.collection.find(
                ops.claim_filter(now), {"_id": 1}, sort=ops.CLAIM_SORT, limit=n
            )
            ids = [doc["_id"] async for doc in cursor]
            if not ids:
                return []
            prefix = self._new_token()
            await self.collection.update_many(*self._batch_update(now, ids, prefix))
            won = self.collection.find(self._batch_fetch_filter(ids, prefix))
            docs = [doc async for doc in won]
            return [AsyncJob(self, doc) for doc in self._in_claim_order(ids, docs)]

    # ------------------------------------------------------------------ job handle

    async def _fenced(self, job: AsyncJob, action: str, update: list[dict[str, Any]]) -> None:
        """Apply ``update`` to ``job`` only while ``job`` still holds its lease."""
        token = self._token_of(job, action)
        with driver_errors():
            doc = await self.collection.find_one_and_update(
                ops.held(job.id, token),
                update,
                projection=ops.METADATA_PROJECTION,
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                await self._raise_lease_lost(job, action)
        self._after_fenced(job, doc)

    async def _raise_lease_lost(self, job: AsyncJob, action: str) -> NoReturn:
        current = await self.collection.find_one({"_id": job.id}, ops.METADATA_PROJECTION)
        raise self._lease_lost(job, action, current)

    async def _complete(self, job: AsyncJob) -> None:
        token = self._token_of(job, "complete")
        with driver_errors():
            result = await self.collection.delete_one(ops.held(job.id, token))
            if result.deleted_count == 0:
                await self._raise_lease_lost(job, "complete")
        job._token = None

    async def _error(self, job: AsyncJob, message: str | None) -> None:
        await self._fenced(job, "record an error for", self._error_update(message))

    async def _progress(self, job: AsyncJob, count: int) -> None:
        await self._fenced(job, "report progress for", self._progress_update(count))

    async def _heartbeat(self, job: AsyncJob) -> None:
        await self._fenced(job, "extend the lease of", self._heartbeat_update())

    async def _release(self, job: AsyncJob) -> None:
        await self._fenced(job, "release", ops.release_update())

    # ------------------------------------------------------------------ inspection

    async def size(self) -> int:
        """Jobs in the queue: waiting, delayed or running (not failed)."""
        with driver_errors():
            return await self.collection.count_documents(ops.size_filter())

    async def stats(self) -> dict[str, int]:
        """Counts by state, from one aggregation (see :meth:`MongoQueue.stats`)."""
        now = await self._now()
        with driver_errors():
            cursor = await self.collection.aggregate(ops.stats_pipeline(now))
            rows = [row async for row in cursor]
        return self._stats_counts(rows)

    async def get(self, job_id: Any) -> AsyncJob | None:
        """A snapshot of one job (not a claim), or None."""
        with driver_errors():
            doc = await self.collection.find_one(ops.by_id(job_id))
        return None if doc is None else self._snapshot(AsyncJob(self, doc))

    async def failed(self, limit: int | None = None) -> list[AsyncJob]:
        """Failed jobs (snapshots with their last error), oldest first."""
        limit = self._check_limit(limit)
        with driver_errors():
            cursor = self.collection.find(ops.failed_filter()).sort("_id", 1)
            if limit is not None:
                cursor = cursor.limit(limit)
            return [self._snapshot(AsyncJob(self, doc)) async for doc in cursor]

    # ------------------------------------------------------------------ maintenance

    async def repair(self) -> int:
        """Free every expired lease at once (each counts as a failed delivery)."""
        await self._ensure_ready()
        now = await self._now()
        with driver_errors():
            result = await self.collection.update_many(
                ops.expired_filter(now), self._expire_update()
            )
        self.events.add("lease_expiries", result.modified_count)
        return result.modified_count

    async def requeue(self, job: AsyncJob | Any = None) -> int:
        """Put failed jobs back in the queue with their attempts reset.

        ``job`` is a job handle or a job id; with no argument every failed job
        is requeued (see :meth:`MongoQueue.requeue`).
        """
        job_id = self._requeue_target(job)
        await self._ensure_ready()
        with driver_errors():
            if job_id is not None:
                try:
                    result = await self.collection.update_one(
                        ops.requeue_filter(job_id), ops.requeue_update()
                    )
                except pymongo.errors.DuplicateKeyError as exc:
                    raise self._requeue_conflict(job_id) from exc
                return result.modified_count
            try:
                result = await self.collection.update_many(
                    ops.requeue_filter(), ops.requeue_update()
                )
                return result.modified_count
            except pymongo.errors.DuplicateKeyError:
                pass
            # Some keys collide: requeue one by one, leaving the colliding ones failed.
            count = 0
            async for doc in self.collection.find(ops.requeue_filter(), {"_id": 1}):
                try:
                    result = await self.collection.update_one(
                        ops.requeue_filter(doc["_id"]), ops.requeue_update()
                    )
                except pymongo.errors.DuplicateKeyError:
                    continue
                count += result.modified_count
            return count

    async def cancel(self, job: AsyncJob | Any) -> bool:
        """Delete a job that is waiting (not held); True if it was (see ``MongoQueue.cancel``)."""
        job_id = self._cancel_target(job)
        with driver_errors():
            result = await self.collection.delete_one(ops.cancel_filter(job_id))
        return result.deleted_count == 1

    async def purge_failed(self) -> int:
        """Delete every failed job; returns how many."""
        with driver_errors():
            result = await self.collection.delete_many(ops.failed_filter())
        return result.deleted_count

    drop_max_attempts = purge_failed
    """The original mongoqueue's name for :meth:`purge_failed`."""

    async def clear(self) -> int:
        """Delete every job (the indexes stay). Returns how many were deleted."""
        with driver_errors():
            result = await self.collection.delete_many({})
        return result.deleted_count


class AsyncJob(JobData):
    """A job claimed from an :class:`AsyncMongoQueue` (the twin of :class:`~mongoqueue.Job`).

    ``async with job as data`` yields the job document, completes the job when
    the block succeeds, stores the traceback as the job's error when it raises
    (the exception propagates), and releases the job when the task is cancelled.
    """

    __slots__ = ("_queue",)

    def __init__(self, queue: AsyncMongoQueue, data: Mapping[str, Any]) -> None:
        super().__init__(data)
        self._queue = queue

    @property
    def queue(self) -> AsyncMongoQueue:
        return self._queue

    async def complete(self) -> None:
        """Mark the job done and remove it from the queue."""
        await self._queue._complete(self)

    async def error(self, message: str | None = None) -> None:
        """Record a failed attempt; the job is retried after a backoff, or fails."""
        await self._queue._error(self, message)

    async def progress(self, count: int = 0) -> None:
        """Store ``count`` and extend the lease by the queue's timeout from now."""
        await self._queue._progress(self, count)

    async def heartbeat(self) -> None:
        """Extend the lease by the queue's timeout from now, keeping the progress count.

        An async worker calls it while a handler runs; raises ``LeaseLost`` if the
        lease was already lost.
        """
        await self._queue._heartbeat(self)

    async def release(self) -> None:
        """Put the job back in the queue at once; its attempts are unchanged."""
        await self._queue._release(self)

    async def __aenter__(self) -> dict[str, Any]:
        return self.data

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        outcome, message = exit_outcome(exc_type, exc, tb)
        if outcome == "complete":
            await self.complete()
            return
        try:
            if outcome == "error":
                await self.error(message)
            else:
                await self.release()
        except MongoQueueError as inner:
            log_unrecorded_failure(self, inner)
