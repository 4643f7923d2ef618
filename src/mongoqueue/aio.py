"""AsyncMongoQueue and AsyncJob: the asyncio twins of MongoQueue and Job.

They run on pymongo's native asyncio client (``pymongo.AsyncMongoClient``,
pymongo 4.9+); no threads, no Motor. This module is the single source of both
twins: ``scripts/synchro`` generates :mod:`mongoqueue.queue` (MongoQueue, Job)
from it by token replacement (``async def`` -> ``def``, ``await`` dropped,
``AsyncMongoQueue`` -> ``MongoQueue``, ...; the rules are in that script), so
edit this file, then run ``scripts/synchro``. The decisions (validation,
documents, replies, errors) come from the shared core in :mod:`mongoqueue._core`
and :mod:`mongoqueue.operations`. Docstrings here are written to read right in
both twins; a fully qualified ``mongoqueue.AsyncX`` name is left as it is.

A claim whose task is cancelled after the server applied it keeps the job held
until its lease expires, exactly like a consumer that crashed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, NoReturn

import pymongo.errors
from pymongo import ReadPreference, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from . import aio_migration as migration
from . import migration_operations as mops
from . import operations as ops
from . import partitions as parts
from ._core import (
    DEFAULT_RETRY,
    KEY_RETRIES,
    MAX_BATCH,
    MAX_EXPIRIES_PER_CLAIM,
    QUEUE_DEFAULT_RETRY,
    QueueConfig,
    QueueCore,
    check_queue_collection,
)
from .errors import MongoQueueError, OperationFailed, driver_errors
from .job import JobData, exit_outcome, log_unrecorded_failure, settled_by_handle
from .retry import RetryPolicy
from .status import JobStatus
from .waiting import (
    CHANGE_STREAMS_UNSUPPORTED,
    WAKE_SLACK_SECONDS,
    Deadline,
    PollBackoff,
    WakeState,
    stream_await_seconds,
)

__all__ = [
    "DEFAULT_RETRY",
    "MAX_BATCH",
    "MAX_EXPIRIES_PER_CLAIM",
    "AsyncJob",
    "AsyncMongoQueue",
    "QueueConfig",
]


class AsyncMongoQueue(QueueCore):
    """A job queue in one MongoDB collection.

    ``AsyncMongoQueue(collection, consumer_id, timeout=300, max_attempts=3)``:
    ``timeout`` is the lease in seconds: how long a consumer may hold a job
    without ``progress()`` before the job is delivered again. A job that fails
    ``max_attempts`` times (errors or expired leases) is *failed* and kept until
    requeued or purged. ``retry`` sets the backoff between deliveries: by default
    none, as in mongoqueue 0.7.2 (a failed job is available again at once);
    ``retry=RetryPolicy(...)`` (or ``DEFAULT_RETRY``) backs off.
    ``partitions=P`` (P > 1) spreads the jobs over P partitions that a sharded
    cluster can place on different shards, every operation on one job targeted at
    its partition (see :mod:`mongoqueue.partitions` and the sharding guide); the
    order is then kept within each partition, not across. Every producer and
    consumer of a queue must use the same count (checked against the database).
    :class:`~mongoqueue.MongoQueue` and :class:`~mongoqueue.AsyncMongoQueue`
    (on pymongo's asyncio client, every method a coroutine) are twins with the
    same settings, methods, semantics and errors; sync and async consumers may
    share one collection.
    """

    def __init__(
        self,
        collection: AsyncCollection[Any],
        consumer_id: str | int,
        timeout: float = 300,
        max_attempts: int = 3,
        *,
        retry: RetryPolicy = QUEUE_DEFAULT_RETRY,
        partitions: int = 1,
    ) -> None:
        check_queue_collection(collection, "AsyncMongoQueue")
        super().__init__(consumer_id, timeout, max_attempts, retry, partitions)
        # Every read the queue makes decides something (a batch fetch, a key lookup):
        # it goes to the primary whatever the client's read preference.
        self.collection = collection.with_options(read_preference=ReadPreference.PRIMARY)
        self._codec_options = collection.codec_options

    def __repr__(self) -> str:
        return self._describe(self.collection.full_name)

    # ------------------------------------------------------------------ plumbing

    async def ensure_indexes(self) -> None:
        """Create the queue's indexes (idempotent; also done on first use)."""
        await self._check_format()  # before any write: a 0.7 collection gets nothing
        with driver_errors():
            try:
                await self.collection.create_indexes(self._indexes())
            except pymongo.errors.OperationFailure as exc:
                conflict = self._index_conflict(exc, self.collection.full_name)
                if conflict is None:
                    raise
                raise conflict from exc
        self._indexes_ready = True

    async def _ensure_ready(self) -> None:
        if not self._indexes_ready:
            await self.ensure_indexes()

    async def close(self) -> None:
        """Close the ``AsyncMongoClient`` the queue's collection belongs to (as 0.7.2 did).

        Only for a client this queue alone uses: other queues and code on the
        same client cannot use it afterwards.
        """
        await self.collection.database.client.close()

    async def _check_format(self) -> None:
        """Refuse a collection holding mongoqueue 0.7 documents (once per queue object).

        One indexed lookup (``state`` missing) the first time; after that, nothing.
        """
        if self._format_checked:
            return
        await self._check_partitions()
        with driver_errors():
            if await self.collection.find_one(mops.OLD_FORMAT, {"_id": 1}) is not None:
                count = await self.collection.count_documents(mops.OLD_FORMAT)
                raise mops.old_format_error(count, self.collection.full_name)
        self._format_checked = True

    async def _check_partitions(self) -> None:
        """Refuse to run with another count of partitions than the queue's record.

        Once per queue object, before its first use: a partitioned queue records
        its count at first use (an insert with a unique ``_id``, so two first users
        agree) and refuses a collection of unpartitioned jobs; an unpartitioned one
        refuses a collection recorded as partitioned.
        """
        if self._partitions_checked:
            return
        meta = self.collection.database.get_collection(
            parts.META_COLLECTION, read_preference=ReadPreference.PRIMARY
        )
        name = self.collection.name
        with driver_errors():
            record = await meta.find_one({"_id": name})
            if record is None and self._partitions > 1:
                if await self.collection.find_one(parts.UNPARTITIONED, {"_id": 1}) is not None:
                    raise parts.unpartitioned_jobs_error(name, self._partitions)
                record = parts.meta_document(name, self._partitions)
                try:
                    await meta.insert_one(record)
                except pymongo.errors.DuplicateKeyError:
                    record = await meta.find_one({"_id": name})
        parts.check_record(name, self._partitions, record)
        self._partitions_checked = True

    async def _scope(self, job: AsyncJob | Any) -> tuple[Any, dict[str, Any] | None]:
        """The id of a job named by handle or id, and the filter of its partition.

        ``{}`` in an unpartitioned queue; ``None`` when a partitioned queue has no
        such job. An id from outside carries no partition: it is looked up by one
        read sent to every partition (untargeted), the write that follows is targeted.
        """
        job_id, partition = self._job_target(job)
        if self._partitions == 1:
            return job_id, {}
        if partition is None:
            with driver_errors():
                found = await self.collection.find_one(ops.by_id(job_id), {parts.PARTITION: 1})
            if found is None or parts.PARTITION not in found:
                return job_id, None
            partition = found[parts.PARTITION]
        return job_id, {parts.PARTITION: partition}

    async def _now(self) -> datetime:
        """The server's current time, estimated (see :mod:`mongoqueue.clock`)."""
        if self._clock.needs_sync():
            # The best of a few round trips: the first of a cold client also pays for
            # server selection and the handshake.
            for sample in range(self._clock.samples()):
                sent_at = time.monotonic()
                with driver_errors():
                    reply = await self.collection.database.command("hello")
                self._record_hello(reply, sent_at, time.monotonic(), first=sample == 0)
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
        session: Any = None,
    ) -> Any:
        """Add a job and return its id.

        ``delay`` (seconds or timedelta) or ``run_at`` (timezone-aware datetime)
        hold the job back until then. With ``key``, while a job with that key is
        waiting or running no second one is created and its id is returned.
        ``max_attempts`` and ``retry`` override the queue's settings for this job.
        With ``session`` (a pymongo client session in a transaction), the job is
        inserted in that transaction: it exists if and only if the transaction commits.
        """
        now = await self._now()
        doc = self._new_job(payload, priority, delay, run_at, key, max_attempts, retry, now)
        await self._ensure_ready()
        with driver_errors():
            for _ in range(KEY_RETRIES):
                try:
                    await self.collection.insert_one(doc, session=session)
                    self.events.add("put")
                    return doc["_id"]
                except pymongo.errors.DuplicateKeyError:
                    if "key" not in doc:
                        raise
                existing = await self.collection.find_one(
                    self._of_job(ops.active_key_filter(doc["key"]), doc),
                    {"_id": 1},
                    session=session,
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
        """Add many jobs in as few round trips as the driver allows; return their ids.

        Every payload is checked first: a bad one fails the call before anything
        is written. Jobs keep the order of ``payloads`` (first in, first out).
        """
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
        """One claim: the best claimable job, or None.

        The claim is served by ``ops.CLAIM_INDEX`` (equality on state, then the
        sort: priority, visible_at, _id): see that index's comment. A partitioned
        queue claims in one partition (equality, then the same index): the one it
        last claimed from (first its home partition), else one a probe found.
        """
        await self._ensure_ready()
        if self._partitions == 1:
            return await self._claim_in(None)
        job = await self._claim_in(self._claim_partition)
        for _ in range(parts.MAX_PROBES):
            if job is not None:
                return job
            partition = await self._probe(await self._now())
            if partition is None:
                return None
            self._claim_partition = partition
            job = await self._claim_in(partition)
        return job

    async def _probe(self, now: datetime) -> int | None:
        """A partition holding a due job, from a random start; None if none has one.

        At most two reads of the claim index (no write), each sent to every
        partition: an idle consumer's claim costs one targeted claim plus these,
        never a claim per partition.
        """
        claim = ops.claim_filter(now)
        with driver_errors():
            for candidates in self._probe_ranges():
                found = await self.collection.find_one(
                    parts.probe_filter(claim, candidates), {parts.PARTITION: 1}
                )
                if found is not None:
                    return int(found[parts.PARTITION])
        return None

    async def _claim_in(self, partition: int | None) -> AsyncJob | None:
        """One claim in ``partition`` (None: the unpartitioned queue)."""
        with driver_errors():
            for _ in range(MAX_EXPIRIES_PER_CLAIM):
                token = self._new_token()
                claim = self._in(ops.claim_filter(await self._now()), partition)
                sent_at = time.monotonic()
                doc = await self.collection.find_one_and_update(
                    claim,
                    self._config.claim_update(token),
                    sort=ops.CLAIM_SORT,
                    return_document=ReturnDocument.AFTER,
                )
                if doc is None:
                    return None
                if self._is_own_claim(doc, token):
                    self._observe_claim(doc, sent_at, time.monotonic())
                    return AsyncJob(self, doc)
                # We met an expired lease and recorded it; claim again.
                self.events.add("lease_expiries")
        return None

    async def next(self, wait: float | None = None) -> AsyncJob | None:
        """Claim the next job: highest priority first, then the one that became due first.

        Returns None when no job is available. With ``wait`` (seconds), waits
        until a job becomes available or the time is up (the asyncio twin suspends
        only its task): woken by a change stream where the server has them, else
        by polling.
        """
        deadline = self._wait_deadline(wait)
        if deadline is None or self._claims_before_waiting():
            job = await self._claim()
            if job is not None or deadline is None:
                return job
        return await self._wait_and_claim(deadline)

    async def _wait_and_claim(self, deadline: Deadline) -> AsyncJob | None:
        if self._change_streams:
            try:
                with driver_errors():
                    if self._wake.lock.acquire(blocking=False):
                        try:
                            return await self._wait_on_stream(deadline, self._wake)
                        finally:
                            self._wake.lock.release()
                    # Another task waits on this queue's stream: wait on one of our own.
                    own = WakeState()
                    try:
                        return await self._wait_on_stream(deadline, own)
                    finally:
                        await self._close_stream(own)
            except OperationFailed as exc:
                if exc.code not in CHANGE_STREAMS_UNSUPPORTED:
                    raise
                self._change_streams = False
        # The polling interval carries over between calls (an idle consumer polls once
        # a second, not from 50 ms again on every call); a claimed job resets it.
        while True:
            if self._poll.claim_due():
                job = await self._claim()
                if job is not None:
                    self._poll = PollBackoff()
                    return job
                self._poll.claimed_nothing()
            if deadline.expired():
                return None
            await asyncio.sleep(self._poll.wait_seconds(deadline.remaining()))

    async def _wait_on_stream(self, deadline: Deadline, wake: WakeState) -> AsyncJob | None:
        """Claim when the stream reports a change or a re-check is due, until the deadline."""
        failed = False
        try:
            while True:
                if deadline.remaining() <= WAKE_SLACK_SECONDS:
                    await asyncio.sleep(deadline.remaining())
                    return await self._claim() if wake.claim_due() else None
                if wake.needs_open(deadline.remaining()):
                    await self._close_stream(wake)
                    seconds = stream_await_seconds(deadline.remaining())
                    stream = await self.collection.watch(
                        ops.wake_pipeline(), max_await_time_ms=max(1, round(seconds * 1000))
                    )
                    # Opened before claiming again, so no job put meanwhile is missed.
                    wake.opened(stream, seconds)
                if wake.claim_due():
                    job = await self._claim()
                    if job is not None:
                        wake.woken()
                        return job
                    empty = None
                    if wake.probe_due():
                        empty = (
                            await self.collection.find_one(
                                self._across(ops.size_filter()), {"_id": 1}
                            )
                            is None
                        )
                    wake.idle(empty)
                if deadline.remaining() <= WAKE_SLACK_SECONDS or wake.needs_open(
                    deadline.remaining()
                ):
                    continue
                try:
                    changed = await wake.stream.try_next()
                except pymongo.errors.OperationFailure as exc:
                    # A stream kept open between calls may fail to resume (its history
                    # left the oplog): reopen it once, which claims again first.
                    if exc.code in CHANGE_STREAMS_UNSUPPORTED or failed:
                        raise
                    failed = True
                    await self._close_stream(wake)
                    continue
                if changed is not None:
                    wake.woken()  # a change that may have made a job claimable
        except BaseException:
            await self._close_stream(wake)
            raise

    async def close_stream(self) -> None:
        """Close the change stream ``next(wait=)`` keeps open between calls.

        The next wait opens a new one. Workers call it when they stop; call it when
        a queue object that waited will wait no more (its client is closing).
        """
        if self._wake.lock.acquire(blocking=False):
            try:
                await self._close_stream(self._wake)
            finally:
                self._wake.lock.release()

    @staticmethod
    async def _close_stream(wake: WakeState) -> None:
        stream, wake.stream = wake.stream, None
        if stream is not None:
            with contextlib.suppress(pymongo.errors.PyMongoError):
                await stream.close()

    async def next_batch(self, n: int, *, hold: int = 0) -> list[AsyncJob]:
        """Claim up to ``n`` jobs in three round trips; each gets its own token and lease.

        ``hold`` (a worker's prefetch): of the ``n``, the last ``hold`` are claimed
        *prefetched*, to wait before they start: until :meth:`AsyncJob.start` is
        called, an expiry of such a job's lease counts no attempt (it never ran).

        Expired leases met at the head are recorded (as ``next()`` does) and the
        claim goes on. If the reply of the batch update is lost, the jobs it
        claimed are fetched by their tokens (``prefix:id``) rather than stranded.
        """
        n = self._check_batch_size(n)
        hold = self._check_hold(hold, n)
        await self._ensure_ready()
        jobs: list[AsyncJob] = []
        if self._partitions == 1:
            await self._batch_in(n, jobs, None, hold)
            return jobs
        # A partitioned queue fills the batch from one partition at a time, as next().
        partition: int | None = self._claim_partition
        for _ in range(parts.MAX_PROBES + 1):
            await self._batch_in(n, jobs, partition, hold)
            if len(jobs) >= n:
                break
            partition = await self._probe(await self._now())
            if partition is None:
                break
            self._claim_partition = partition
        return jobs

    async def _batch_in(
        self, n: int, jobs: list[AsyncJob], partition: int | None, hold: int = 0
    ) -> None:
        """Claim up to ``n`` jobs in all (``jobs`` holds those claimed so far) in one
        partition; the last ``hold`` of the ``n`` are claimed prefetched."""
        with driver_errors():
            for _ in range(MAX_EXPIRIES_PER_CLAIM):
                now = await self._now()
                cursor = self.collection.find(
                    self._in(ops.claim_filter(now), partition),
                    {"_id": 1},
                    sort=ops.CLAIM_SORT,
                    limit=n - len(jobs),
                )
                ids = [doc["_id"] async for doc in cursor]
                if not ids:
                    break
                prefix = self._new_token()
                sent_at = time.monotonic()
                try:
                    result = await self.collection.update_many(
                        *self._batch_update(
                            now, ids, prefix, partition, hold - (n - len(jobs) - len(ids))
                        )
                    )
                except pymongo.errors.PyMongoError:
                    # Not a retryable write: the server may have applied it.
                    docs = await self._recover_batch(ids, prefix, partition)
                    if not docs and not jobs:
                        raise
                    jobs.extend(AsyncJob(self, doc) for doc in docs)
                    break
                received_at = time.monotonic()
                won = self.collection.find(self._batch_fetch_filter(ids, prefix, partition))
                docs = self._in_claim_order(ids, [doc async for doc in won])
                if docs:
                    self._observe_claim(docs[0], sent_at, received_at)
                jobs.extend(AsyncJob(self, doc) for doc in docs)
                expiries = self._batch_expiries(result.modified_count, len(docs))
                if not expiries or len(jobs) >= n:
                    break

    async def _recover_batch(
        self, ids: list[Any], prefix: str, partition: int | None = None
    ) -> list[Any]:
        """The jobs a batch claim whose reply was lost did claim ([] if unknown)."""
        try:
            won = self.collection.find(self._batch_fetch_filter(ids, prefix, partition))
            return self._in_claim_order(ids, [doc async for doc in won])
        except pymongo.errors.PyMongoError:
            return []

    # ------------------------------------------------------------------ job handle

    async def _fenced_in(
        self, job: AsyncJob, action: str, update: list[dict[str, Any]] | None, session: Any
    ) -> None:
        """Apply ``update`` (None: delete) to ``job`` in ``session``'s transaction, fenced.

        The handle keeps its token: only the caller knows whether the transaction
        commits (then it calls ``job.let_go()``). Raises LeaseLost, which should
        abort the transaction, when the job is no longer held.
        """
        token = self._token_of(job, action)
        with driver_errors():
            if update is None:
                done = (
                    await self.collection.delete_one(
                        self._of_job(ops.held(job.id, token), job.data), session=session
                    )
                ).deleted_count
            else:
                done = (
                    await self.collection.update_one(
                        self._of_job(ops.held(job.id, token), job.data), update, session=session
                    )
                ).matched_count
        if not done:
            raise self._lease_lost_in_session(job, action)

    async def _fenced(
        self, job: AsyncJob, action: str, update: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Apply ``update`` to ``job`` only while ``job`` still holds its lease."""
        token = self._token_of(job, action)
        with driver_errors():
            doc = await self.collection.find_one_and_update(
                self._of_job(ops.held(job.id, token), job.data),
                update,
                projection=ops.METADATA_PROJECTION,
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                await self._raise_lease_lost(job, action)
        return self._after_fenced(job, doc)

    async def _raise_lease_lost(self, job: AsyncJob, action: str) -> NoReturn:
        current = await self.collection.find_one(
            self._of_job({"_id": job.id}, job.data), ops.METADATA_PROJECTION
        )
        raise self._lease_lost(job, action, current)

    async def _complete(
        self,
        job: AsyncJob,
        value: Any = None,
        keep: float | timedelta | None = None,
        session: Any = None,
    ) -> dict[str, Any] | None:
        if self._completed_by(job):
            return None
        update = self._complete_update(value, keep)
        if session is not None:
            await self._fenced_in(job, "complete", update, session)
            return job.data
        if update is not None:
            await self._fenced(job, "complete", update)
            return self._after_complete(job)
        token = self._token_of(job, "complete")
        with driver_errors():
            result = await self.collection.delete_one(
                self._of_job(ops.held(job.id, token), job.data)
            )
            if result.deleted_count == 0:
                await self._raise_lease_lost(job, "complete")
        return self._after_complete(job)

    async def complete_many(self, jobs: Iterable[AsyncJob]) -> list[bool]:
        """Complete several held jobs in one round trip; returns each job's outcome.

        One unordered ``bulk_write`` of fenced deletes, each with its own job's
        lease token (the filter ``complete()`` uses), so a lost lease on one job
        does not stop the others. ``outcomes[i]`` is True when ``jobs[i]`` is
        completed (gone from the queue), False when its handle no longer held it
        (its lease expired and it was claimed again, or it was released or
        failed): that job was not completed by this call and the handle lets go.
        A handle that already completed its job counts as True and sends nothing.
        Only when fewer jobs were deleted than sent does it read which are still
        there (a second round trip). A job whose lease was taken over and that
        its new holder already completed is gone too, and counts as True.
        """
        completed, _ = await self.acknowledge(jobs, ())
        return completed

    async def start_many(self, jobs: Iterable[AsyncJob]) -> list[bool]:
        """:meth:`AsyncJob.start` for several prefetched jobs in one round trip.

        ``outcomes[i]`` is True when ``jobs[i]`` is started (its lease extended),
        False when its handle no longer held it (the handle lets go).
        """
        _, started = await self.acknowledge((), jobs)
        return started

    async def acknowledge(
        self, completed: Iterable[AsyncJob] = (), started: Iterable[AsyncJob] = ()
    ) -> tuple[list[bool], list[bool]]:
        """:meth:`complete_many` and :meth:`start_many` together, in one ``bulk_write``.

        Returns the outcomes of each list. A worker sends its completions and the
        starts of its prefetched jobs this way.
        """
        done, to_delete = self._held_targets(completed, AsyncJob, self)
        begun, to_start = self._held_targets(started, AsyncJob, self)
        writes = ops.acknowledge_writes(
            self._fences(done), self._fences(begun), self._config.lease_ms
        )
        current: list[Any] | None = None
        if writes:
            with driver_errors():
                result = await self.collection.bulk_write(writes, ordered=False)
                if result.deleted_count < len(to_delete) or result.matched_count < len(to_start):
                    ids = [job_id for job_id, _ in [*to_delete, *to_start]]
                    left = self.collection.find(ops.ids_filter(ids), {"lease_token": 1})
                    current = [(doc["_id"], doc.get("lease_token")) async for doc in left]
        return self._after_complete_many(done, current), self._after_start_many(begun, current)

    async def _error(self, job: AsyncJob, message: str | None) -> None:
        await self._fenced(job, "record an error for", self._error_update(message))

    async def _progress(self, job: AsyncJob, count: int) -> dict[str, Any]:
        return await self._fenced(job, "report progress for", self._progress_update(count))

    async def _heartbeat(self, job: AsyncJob) -> None:
        await self._fenced(job, "extend the lease of", self._heartbeat_update())

    async def _start(self, job: AsyncJob) -> None:
        await self._fenced(job, "start", ops.start_update(self._config.lease_ms))

    async def _record_session(self, job: AsyncJob, session_id: Any) -> None:
        await self._fenced(job, "record the session of", self._record_session_update(session_id))

    async def _release(self, job: AsyncJob) -> dict[str, Any]:
        return await self._fenced(job, "release", ops.release_update())

    async def _end_cancelled(self, job: AsyncJob, keep: float | timedelta) -> None:
        update = ops.cancelled_update(self._keep_ms(keep), "cancelled while running")
        await self._fenced(job, "cancel", update)

    async def _hand_back(self, job: AsyncJob, message: str, max_passes: int, delay: float) -> None:
        await self._fenced(job, "hand back", self._hand_back_update(message, max_passes, delay))

    # ------------------------------------------------------------------ inspection

    async def size(self) -> int:
        """Jobs in the queue: waiting, delayed, running or failed (as 0.7.2 counted)."""
        await self._check_format()
        with driver_errors():
            return await self.collection.count_documents(self._across(ops.size_filter()))

    async def _count_all(self, filters: dict[str, dict[str, Any]]) -> dict[str, int]:
        """One ``count_documents`` per filter, each walking the index that serves it."""
        await self._check_format()
        await self._ensure_ready()
        with driver_errors():
            try:
                return await self._count_each(filters)
            except pymongo.errors.OperationFailure as exc:
                if not self._is_missing_index(exc):
                    raise
            await self.ensure_indexes()
            return await self._count_each(filters)

    async def _count_each(self, filters: dict[str, dict[str, Any]]) -> dict[str, int]:
        return {
            name: await self.collection.count_documents(
                self._across(query), hint=self._count_hint(query)
            )
            for name, query in filters.items()
        }

    async def stats(self) -> dict[str, int]:
        """The original's counts: ``available``, ``locked``, ``errors``, ``total``.

        ``available``: jobs not held and not failed (delayed ones included);
        ``locked``: held by a consumer (expired leases included); ``errors``: jobs
        that reached max attempts; ``total``: every document. :meth:`counts` has
        the full breakdown.
        """
        return ops.stats_from(await self._count_all(ops.stats_filters()))

    async def counts(self) -> dict[str, int]:
        """Jobs by state: ``waiting``, ``delayed``, ``running`` (``lease_expired`` of
        them past their lease), ``failed``, ``completed``, ``cancelled``, ``total``.

        A few counts, each an index scan (no document is read); not a snapshot.
        """
        return ops.counts_from(await self._count_all(ops.count_filters(await self._now())))

    async def get(self, job_id: Any) -> AsyncJob | None:
        """A snapshot of one job (not a claim), or None.

        In a partitioned queue a handle is read from its partition; an id is read
        from every partition (one untargeted read).
        """
        await self._check_format()
        job_id, partition = self._job_target(job_id)
        with driver_errors():
            doc = await self.collection.find_one(self._in(ops.by_id(job_id), partition))
        return None if doc is None else self._snapshot(AsyncJob(self, doc))

    async def failed(self, limit: int | None = None) -> list[AsyncJob]:
        """Failed jobs (snapshots with their last error), oldest first."""
        await self._check_format()
        limit = self._check_limit(limit)
        with driver_errors():
            cursor = self.collection.find(ops.failed_filter()).sort("_id", 1)
            if limit is not None:
                cursor = cursor.limit(limit)
            return [self._snapshot(AsyncJob(self, doc)) async for doc in cursor]

    async def jobs(
        self,
        state: str = "all",
        *,
        key: str | None = None,
        locked_by: str | None = None,
        priority: int | None = None,
        limit: int | None = None,
        after: JobData | str | None = None,
    ) -> list[AsyncJob]:
        """Snapshots of jobs in listing order (not claims), read from the claim index.

        ``state`` is one of ``waiting``, ``delayed``, ``running``, ``lease_expired``,
        ``failed`` or ``all`` (the default); ``key``, ``locked_by`` and ``priority``
        narrow it by exact match. The order is by stored state (failed jobs first),
        then the claim order: priority, then the time each job became due. To page,
        pass the last job of a page (or ``operations.listing_cursor`` of its
        ``data``) as ``after``: the next page starts right after its place, even if
        that job has finished since.
        """
        limit = self._check_limit(limit)
        query = self._listing_query(state, await self._now(), key, locked_by, priority, after)
        with driver_errors():
            cursor = self.collection.find(self._across(query), sort=ops.LISTING_SORT)
            if limit is not None:
                cursor = cursor.limit(limit)
            return [self._snapshot(AsyncJob(self, doc)) async for doc in cursor]

    async def server_time(self) -> datetime:
        """This queue's estimate of the server's current time (UTC; an upper bound, see
        ``mongoqueue.clock``).

        The time ``jobs()`` and ``counts()`` judge ``waiting`` against ``delayed`` by (a
        job whose ``visible_at`` is after it is delayed), and the one schedules compute
        their ticks from.
        """
        return await self._now()

    # ------------------------------------------------------------------ maintenance

    async def repair(self) -> int:
        """Free every expired lease at once (each counts as a failed delivery).

        ``next()`` reclaims expired leases by itself; this is a bulk clean-up.
        Returns how many leases were freed.
        """
        await self._ensure_ready()
        now = await self._now()
        with driver_errors():
            result = await self.collection.update_many(
                self._across(ops.expired_filter(now)), self._expire_update()
            )
        self.events.add("lease_expiries", result.modified_count)
        return result.modified_count

    async def requeue(self, job: AsyncJob | Any = None) -> int:
        """Put failed jobs back in the queue with their attempts reset.

        ``job`` is a job handle (:class:`AsyncJob`) or a job id; with no argument
        every failed job is requeued. Returns how many were requeued. A failed job
        whose key is used by a waiting or running job stays failed
        (``DuplicateKeyConflict`` when one job was named).
        """
        await self._ensure_ready()
        job_id = None if job is None else self._requeue_target(job)
        scope: dict[str, Any] = {}
        if job_id is not None:
            job_id, found = await self._scope(job)
            if found is None:
                return 0
            scope = found
        with driver_errors():
            if job_id is not None:
                try:
                    result = await self.collection.update_one(
                        {**scope, **ops.requeue_filter(job_id)}, ops.requeue_update()
                    )
                except pymongo.errors.DuplicateKeyError as exc:
                    raise self._requeue_conflict(job_id) from exc
                return result.modified_count
            # One update per failed job, unordered: a job whose key a ready job holds
            # stays failed alone, and the counts say how many the others were.
            cursor = self.collection.find(ops.requeue_filter(), {"_id": 1, parts.PARTITION: 1})
            failed = [doc async for doc in cursor]
            if not failed:
                return 0
            try:
                written = await self.collection.bulk_write(
                    self._requeue_writes(failed), ordered=False
                )
            except pymongo.errors.BulkWriteError as exc:
                return self._requeued_despite(exc)
            return written.modified_count

    async def cancel(self, job: AsyncJob | Any) -> bool:
        """Delete a job that is waiting (due or delayed, not held); True if it was.

        ``job`` is a job handle (:class:`AsyncJob`) or a job id. A running or failed
        job is left alone: the delete is filtered on the waiting state, so it
        cannot race a claim.
        """
        self._cancel_target(job)
        job_id, scope = await self._scope(job)
        if scope is None:
            return False
        with driver_errors():
            result = await self.collection.delete_one({**scope, **ops.cancel_filter(job_id)})
        return result.deleted_count == 1

    async def request_cancel(self, job: AsyncJob | Any, *, keep: float | timedelta = 0) -> str:
        """Cancel a job whether it waits or runs; returns what happened.

        A waiting job is cancelled at once (``"cancelled"``): deleted as by
        ``cancel()``, or kept in state ``cancelled`` for ``keep`` seconds. A running
        job gets a cancel request (``"requested"``): its worker sees it at its
        next heartbeat (``job.cancel_requested``) and ends it as cancelled. A job
        that is failed, finished or unknown is left alone (``""``).
        """
        self._cancel_target(job)
        keep_ms = self._keep_ms(keep)
        job_id, scope = await self._scope(job)
        if scope is None:
            return ""
        with driver_errors():
            if keep_ms == 0:
                waiting = (
                    await self.collection.delete_one({**scope, **ops.cancel_filter(job_id)})
                ).deleted_count
            else:
                waiting = (
                    await self.collection.update_one(
                        {**scope, **ops.cancel_filter(job_id)}, ops.cancelled_update(keep_ms)
                    )
                ).modified_count
            if waiting:
                return "cancelled"
            running = await self.collection.update_one(
                {**scope, **ops.request_cancel_filter(job_id)}, ops.request_cancel_update()
            )
            return "requested" if running.matched_count else ""

    async def status(self, job_id: Any) -> JobStatus:
        """The status of any job by id: its state (see :mod:`mongoqueue.status`),
        attempts, last error, server timestamps and result where kept."""
        partition = None
        if isinstance(job_id, JobData):
            job_id, partition = self._job_target(job_id)
        with driver_errors():
            doc = await self.collection.find_one(self._in(ops.by_id(job_id), partition))
        return self._status(job_id, doc, await self._now())

    async def purge_failed(self) -> int:
        """Delete every failed job; returns how many."""
        with driver_errors():
            result = await self.collection.delete_many(ops.failed_filter())
        return result.deleted_count

    drop_max_attempts = purge_failed
    """The original mongoqueue's name for :meth:`purge_failed`."""

    async def clear(self) -> None:
        """Drop the queue's collection, as 0.7.2 did, and create the queue's indexes again.

        See :meth:`MongoQueue.clear`.
        """
        self._indexes_ready = False
        with driver_errors():
            await self.collection.drop()
        await self.ensure_indexes()

    async def migrate(
        self, *, limit: int | None = None, dry_run: bool = False
    ) -> migration.MigrationReport:
        """Convert the collection's mongoqueue 0.7 documents to jobs of this version.

        Uses this queue's ``timeout`` and ``max_attempts`` (see
        :func:`mongoqueue.migration.migrate`); stop the old consumers first.
        """
        report = await migration.migrate(
            self.collection,
            timeout=self.timeout,
            max_attempts=self.max_attempts,
            limit=limit,
            dry_run=dry_run,
        )
        self._format_checked = report.complete
        return report


class AsyncJob(JobData):
    """A job handle, claimed with :meth:`AsyncMongoQueue.next`.

    As a context manager (``async with job as data``) it yields the job document
    (``data["payload"]``), completes the job when the block succeeds, and stores
    the traceback as the job's error when it raises (the exception propagates).
    Anything but an ``Exception`` (KeyboardInterrupt, a cancelled task) releases
    the job. :class:`~mongoqueue.Job` and :class:`~mongoqueue.AsyncJob` are twins.
    """

    __slots__ = ("_queue",)

    def __init__(self, queue: AsyncMongoQueue, data: Mapping[str, Any]) -> None:
        super().__init__(data)
        self._queue = queue

    @property
    def queue(self) -> AsyncMongoQueue:
        return self._queue

    async def complete(
        self, *, result: Any = None, keep: float | timedelta | None = None, session: Any = None
    ) -> dict[str, Any] | None:
        """Mark the job done and remove it from the queue; returns the job document.

        Calling it again on the same handle does nothing and returns None (as in 0.7.2).
        With ``keep`` (seconds or timedelta, > 0) the job is kept instead, in state
        ``completed`` with ``result`` (any BSON value), until the TTL index removes
        it ``keep`` seconds later: one fenced update, so the result is stored if
        and only if this handle still holds the job. ``keep=0`` deletes it.
        With ``session`` the completion is part of that session's transaction: it
        raises LeaseLost (abort the transaction) when the job is no longer held,
        and the handle keeps its claim until you call :meth:`let_go` after commit.
        """
        return await self._queue._complete(self, result, keep, session)

    async def error(self, message: str | None = None) -> None:
        """Record a failed attempt: the job is available again (after the queue's
        backoff, if it has one), or failed once it reached max attempts."""
        await self._queue._error(self, message)

    async def progress(self, count: int = 0) -> dict[str, Any]:
        """Store ``count`` and extend the lease by the queue's timeout from now.

        Returns the job document (with its new lease).
        """
        return await self._queue._progress(self, count)

    async def heartbeat(self) -> None:
        """Extend the lease by the queue's timeout from now, keeping the progress count.

        The worker calls it while a handler runs; raises ``LeaseLost`` if the
        lease was already lost.
        """
        await self._queue._heartbeat(self)

    async def start(self) -> None:
        """Start a job claimed prefetched (``next_batch(hold=)``): extend its lease as
        :meth:`heartbeat` does, and from now on an expiry of its lease counts an
        attempt. A worker calls it before the handler runs; raises ``LeaseLost``."""
        await self._queue._start(self)

    async def release(self) -> dict[str, Any]:
        """Put the job back in the queue at once; its attempts are unchanged.

        Returns the job document.
        """
        return await self._queue._release(self)

    async def record_session(self, session_id: Mapping[str, Any]) -> None:
        """Record the session (``session.session_id``) of the transaction about to
        run this job's task, and extend the lease as :meth:`heartbeat` does.

        A later holder of the job (after this one's lease ended) kills that session
        first, which aborts a transaction left open by a dead worker at once instead
        of after the server's ``transactionLifetimeLimitSeconds``.
        """
        await self._queue._record_session(self, session_id)

    async def let_go(self) -> None:
        """Forget this handle's claim: the job was settled elsewhere (a committed
        transaction that completed it with ``complete(session=...)``)."""
        self._token = None
        self._settled = "complete"

    async def end_cancelled(self, keep: float | timedelta) -> None:
        """End this held job in state ``cancelled`` (kept ``keep`` seconds), never retried.

        What a worker does after it sees ``cancel_requested``.
        """
        await self._queue._end_cancelled(self, keep)

    async def hand_back(self, message: str, max_passes: int, delay: float = 1.0) -> None:
        """Release a job this consumer cannot run, for another consumer.

        Counts the pass; at ``max_passes`` passes the job fails with ``message``.
        It becomes claimable again after ``delay`` seconds.
        """
        await self._queue._hand_back(self, message, max_passes, delay)

    async def __aenter__(self) -> dict[str, Any]:
        return self.data

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if settled_by_handle(self):
            return
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
