"""The asyncio twin of :mod:`mongoqueue.tasks.runner`: what AsyncWorker runs for an AsyncApp.

* :class:`AsyncTaskRunner` is the AsyncWorker's handler: coroutine tasks are
  awaited (cancelled at once when a heartbeat brings a cancel request, or at
  their ``timeout``), plain functions run in a thread (``asyncio.to_thread``).
* :class:`AsyncQueueGroup` claims from several queues in priority order.
* :func:`run_transactional_async`: the task's writes and the job's fenced
  completion in one transaction (same rules as the sync one).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pymongo.errors

from .._core import DEFAULT_RETRY
from ..aio import AsyncJob, AsyncMongoQueue
from ..errors import MongoQueueError, driver_errors
from ..job import exception_message
from ..waiting import (
    CHANGE_STREAMS_UNSUPPORTED,
    RECHECK_SECONDS,
    WAKE_SLACK_SECONDS,
    Deadline,
    PollBackoff,
)
from .operations import queues_wake_pipeline, read_call
from .registry import TaskDef
from .runner import (
    CANCEL_CHECK_SECONDS,
    PASS_DELAY_SECONDS,
    TaskTimeout,
    _current,
    has_label,
    log,
)

if TYPE_CHECKING:
    from .app import AppCore

__all__ = ["AsyncQueueGroup", "AsyncTaskRunner", "run_until_empty_async"]


class _Cancelled(Exception):
    pass


async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def call_async(job: AsyncJob, task: TaskDef, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Run the task: await a coroutine function (cancelled on a cancel request or at
    its timeout), or run a plain function in a thread."""
    if not task.is_async:
        call = asyncio.to_thread(task.func, *args, **kwargs)
        if task.timeout is None:
            return await call
        try:
            return await asyncio.wait_for(call, task.timeout)
        except asyncio.TimeoutError as exc:
            raise TaskTimeout(f"task {task.name} ran past its timeout of {task.timeout}s") from exc
    running = asyncio.ensure_future(task.func(*args, **kwargs))
    started = time.monotonic()
    while True:
        done, _ = await asyncio.wait({running}, timeout=CANCEL_CHECK_SECONDS)
        if done:
            return running.result()
        timed_out = task.timeout is not None and time.monotonic() - started >= task.timeout
        if job.cancel_requested or timed_out:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            if timed_out and not job.cancel_requested:
                raise TaskTimeout(f"task {task.name} ran past its timeout of {task.timeout}s")
            raise _Cancelled


async def run_transactional_async(
    job: AsyncJob, task: TaskDef, args: list[Any], kwargs: dict[str, Any]
) -> Any:
    """See :func:`mongoqueue.tasks.runner.run_transactional`."""
    queue = job.queue
    deadline = time.monotonic() + queue.timeout
    client = queue.collection.database.client
    prior = job.txn_session
    if prior is not None:
        try:
            with driver_errors():
                await client.admin.command("killSessions", [prior])
        except MongoQueueError as exc:
            log.warning("job %s: could not kill the previous holder's session: %s", job.id, exc)
    job.heartbeat_paused = True
    try:
        session = await _maybe(client.start_session())
        async with session:
            while True:
                await job.record_session(session.session_id)
                try:
                    await _maybe(session.start_transaction())
                    result = await call_async(job, task, args, {**kwargs, "session": session})
                    await job.complete(result=result, keep=task.keep_result, session=session)
                    await _commit(session, deadline)
                except BaseException as exc:
                    if session.in_transaction:
                        with contextlib.suppress(pymongo.errors.PyMongoError):
                            await session.abort_transaction()
                    if has_label(exc, "TransientTransactionError") and time.monotonic() < deadline:
                        continue
                    raise
                await job.let_go()
                return result
    finally:
        job.heartbeat_paused = False


async def _commit(session: Any, deadline: float) -> None:
    while True:
        try:
            with driver_errors():
                await session.commit_transaction()
            return
        except MongoQueueError as exc:
            if has_label(exc, "UnknownTransactionCommitResult") and time.monotonic() < deadline:
                continue
            raise


class AsyncTaskRunner:
    """The handler an AsyncWorker runs for an app: dispatches each job to its task."""

    def __init__(self, app: AppCore) -> None:
        self.app = app

    async def __call__(self, job: AsyncJob) -> None:
        name, args, kwargs = read_call(job.payload)
        task = self.app.registry.get(name) if name is not None else None
        if task is None:
            message = self.app.unknown_task_message(name)
            await job.hand_back(message, self.app.max_passes, PASS_DELAY_SECONDS)
            return
        if job.cancel_requested:  # requested while an earlier holder ran it
            await job.end_cancelled(task.keep_result)
            return
        token = _current.set(job)
        result: Any = None
        try:
            if task.transactional:
                await run_transactional_async(job, task, args, kwargs)
                return
            try:
                result = await call_async(job, task, args, kwargs)
            except _Cancelled:
                pass
            except Exception:
                if not job.cancel_requested:
                    raise
            if job.cancel_requested:
                await job.end_cancelled(task.keep_result)
                return
            await job.complete(result=result, keep=task.keep_result)
        except _Cancelled:
            if job.held:
                await job.end_cancelled(task.keep_result)
        finally:
            _current.reset(token)


class AsyncQueueGroup(AsyncMongoQueue):
    """Several queues claimed as one, highest first (see ``QueueGroup``)."""

    batch_claims = False  # next() picks among the queues; next_batch() would not

    def __init__(self, queues: list[AsyncMongoQueue]) -> None:
        first = queues[0]
        super().__init__(
            first.collection,
            first.consumer_id,
            first.timeout,
            first.max_attempts,
            retry=first.retry or DEFAULT_RETRY,
        )
        self.queues = queues
        self._streams = True

    def __repr__(self) -> str:
        names = ", ".join(q.collection.name for q in self.queues)
        return f"<AsyncQueueGroup {self.collection.database.name} [{names}]>"

    async def ensure_indexes(self) -> None:
        for queue in self.queues:
            await queue.ensure_indexes()

    async def size(self) -> int:
        return sum([await queue.size() for queue in self.queues])

    async def _first(self) -> AsyncJob | None:
        for queue in self.queues:
            job = await queue.next()
            if job is not None:
                return job
        return None

    async def next(self, wait: float | None = None) -> AsyncJob | None:
        deadline = self._wait_deadline(wait)
        job = await self._first()
        if job is not None or deadline is None:
            return job
        return await self._wait_any(deadline)

    async def _wait_any(self, deadline: Deadline) -> AsyncJob | None:
        names = [q.collection.name for q in self.queues]
        if self._streams:
            try:
                with driver_errors():
                    while True:
                        block = min(RECHECK_SECONDS, deadline.remaining())
                        async with await self.collection.database.watch(
                            queues_wake_pipeline(names), max_await_time_ms=max(1, int(block * 1000))
                        ) as stream:
                            while True:
                                job = await self._first()
                                if job is not None or deadline.expired():
                                    return job
                                if deadline.remaining() + WAKE_SLACK_SECONDS < block:
                                    break
                                await stream.try_next()
            except pymongo.errors.OperationFailure as exc:
                if exc.code not in CHANGE_STREAMS_UNSUPPORTED:
                    raise
                self._streams = False
        backoff = PollBackoff()
        while True:
            job = await self._first()
            if job is not None or deadline.expired():
                return job
            await asyncio.sleep(backoff.next_interval(deadline.remaining()))


async def run_until_empty_async(
    queues: list[AsyncMongoQueue], handler: Callable[[AsyncJob], Awaitable[None]]
) -> int:
    """Claim and run jobs in this task until none is claimable; returns the count."""
    group = AsyncQueueGroup(queues)
    ran = 0
    while (job := await group.next()) is not None:
        ran += 1
        try:
            await handler(job)
        except Exception as exc:
            if job.held:
                await job.error(exception_message(type(exc), exc, exc.__traceback__))
            continue
        if job.held:
            await job.complete()
    return ran
