"""AsyncWorker: the asyncio twin of :class:`~mongoqueue.worker.Worker`, for coroutine handlers.

``await AsyncWorker(queue, handler, concurrency=10).run()`` on an
:class:`~mongoqueue.AsyncMongoQueue` (or ``mongoqueue worker module:function``
with an ``async def`` handler) does what the sync worker does, with tasks
instead of threads:

* runs ``await handler(job)`` in a task per running job; completes the job when
  the handler returns and records the traceback with ``job.error()`` when it
  raises (a handler may also complete, error or release the job itself);
* one heartbeat task extends each running job's lease every ``heartbeat``
  seconds; a handler still running after ``hard_limit`` seconds is *cancelled*,
  then its job gets the failed attempt ("abandoned: ... hard limit");
* waits for work with ``next(wait=)``, so an idle worker is woken as soon as a
  job is put;
* on SIGTERM or SIGINT (one handler for every worker of the process, see
  :mod:`mongoqueue._signals`) stops claiming,
  lets the running jobs finish for up to ``grace`` seconds, then cancels the
  rest and releases their jobs (attempts unchanged); a second signal exits at
  once, and the leases of its jobs expire so they are delivered again;
* if the task running :meth:`AsyncWorker.run` is cancelled, it cancels the
  handlers, releases their jobs and re-raises the cancellation.

A cancelled handler gets ``CANCEL_WAIT_SECONDS`` to unwind (its ``finally``
blocks run) before its job is settled anyway and the worker moves on; a handler
that swallows the cancellation then runs on in the background, its result
discarded, like an abandoned thread of the sync worker. A ``CancelledError``
the worker did not ask for counts as the handler failing.

The parameters, exit codes and log messages are the sync worker's (see
:mod:`mongoqueue.worker`): both take every decision from
:mod:`mongoqueue._worker_core`, and a test compares their public signatures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal

from ._signals import attach
from ._worker_core import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Outcome,
    RunningState,
    WorkerCore,
    check_handler,
    describe,
    log,
    log_abandoned,
    log_burst_done,
    log_cannot_start,
    log_completed,
    log_discarded,
    log_failed,
    log_failure,
    log_heartbeat_failed,
    log_job_started,
    log_reconnect,
    log_released,
    log_started,
    log_stopped,
    log_unreleased,
    log_waiting,
)
from .aio import AsyncJob, AsyncMongoQueue
from .errors import InvalidArgumentType, LeaseLost, MongoQueueError, QueueUnavailable
from .job import exception_message, lease_lost_message
from .prefetch import AsyncAcknowledger, PrefetchBuffer, buffer_max_age, claim_size
from .presence import AsyncWorkerPresence
from .queue import MongoQueue

__all__ = [
    "CANCEL_WAIT_SECONDS",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "AsyncHandler",
    "AsyncObserver",
    "AsyncWorker",
]

AsyncHandler = Callable[[AsyncJob], Awaitable[Any]]

#: ``observer(job, outcome, seconds)``: a plain function called as each job is settled
#: (see ``mongoqueue.worker.Observer``); it runs on the event loop, so it must be quick.
AsyncObserver = Callable[[AsyncJob, str, float], None]

#: How long a cancelled handler may take to unwind before its job is settled anyway.
CANCEL_WAIT_SECONDS = 5.0

StopReason = Literal["abandoned", "released"]


class AsyncRunningJob(RunningState[AsyncJob]):
    """A job in an async worker's hands: its task, and why the worker cancelled it."""

    def __init__(self, job: AsyncJob, lease: float) -> None:
        super().__init__(job, lease)
        self.lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None
        self.stop_reason: StopReason | None = None
        self.beating = True
        #: The worker stopped waiting for the cancelled handler and moved on.
        self.left_behind = False

    async def settle(
        self, outcome: Outcome, action: Callable[[], Awaitable[object]], retry: bool = True
    ) -> bool:
        """Run ``action`` unless the job is already settled (see ``RunningJob.settle``)."""
        async with self.lock:
            if not self.claim(outcome):
                return False
        await self.acknowledge(action, retry)
        return True

    async def acknowledge(
        self, action: Callable[[], Awaitable[object]], retry: bool = True
    ) -> None:
        """Write the settlement already claimed, trying again while the lease lasts."""
        while True:
            async with self.lock:
                if not self.needs_ack():
                    return
                try:
                    await action()
                    self.acked()
                    return
                except MongoQueueError as exc:
                    pause = self.ack_failed(exc, retry)
            if pause is None:
                return
            await asyncio.sleep(pause)


class AsyncWorker(WorkerCore):
    """Runs ``await handler(job)`` on the jobs of an :class:`~mongoqueue.AsyncMongoQueue`.

    The same parameters as :class:`~mongoqueue.worker.Worker`; ``concurrency``
    is the number of handler tasks at once. :meth:`run` is a coroutine;
    :meth:`stop` is a plain method that any thread may call.
    """

    def __init__(
        self,
        queue: AsyncMongoQueue,
        handler: AsyncHandler,
        *,
        concurrency: int = 1,
        heartbeat: float | None = None,
        hard_limit: float | None = None,
        grace: float = 30.0,
        burst: bool = False,
        idle_wait: float = 1.0,
        handle_signals: bool = True,
        observer: AsyncObserver | None = None,
        prefetch: int | None = None,
        batch_acks: bool = True,
    ) -> None:
        if not isinstance(queue, AsyncMongoQueue):
            hint = "; run a MongoQueue with Worker" if isinstance(queue, MongoQueue) else ""
            raise InvalidArgumentType(
                f"queue must be an AsyncMongoQueue, got {type(queue).__name__}{hint}"
            )
        check_handler(handler, want_async=True)
        super().__init__(
            queue.timeout,
            concurrency=concurrency,
            heartbeat=heartbeat,
            hard_limit=hard_limit,
            grace=grace,
            burst=burst,
            idle_wait=idle_wait,
            handle_signals=handle_signals,
            observer=observer,
            prefetch=prefetch,
            batch_acks=batch_acks,
        )
        self.queue = queue
        self.handler = handler
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        self._active: dict[int, AsyncRunningJob] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._abandoning: set[asyncio.Task[Any]] = set()
        self.queue_name = queue.collection.name
        if not queue.batch_claims:
            self.prefetch = 0
        self._buffer: PrefetchBuffer[AsyncJob] = PrefetchBuffer(
            buffer_max_age(queue.timeout, self.heartbeat)
        )
        self._dry = False  # the last batch claim found nothing: wait with next()
        self._acks: AsyncAcknowledger[AsyncJob, AsyncRunningJob] | None = (
            AsyncAcknowledger(self._acked) if self.batch_acks else None
        )
        self._presence = AsyncWorkerPresence(
            queue.collection.database,
            queue.consumer_id,
            kind="AsyncWorker",
            queue=self.queue_name,
            concurrency=self.concurrency,
            interval=self.heartbeat,
            snapshot=self._snapshot,
            buffer=self.activity,
        )

    @property
    def worker_id(self) -> str:
        """This worker's id in the workers registry (its consumer id and a suffix)."""
        return self._presence.id

    def _snapshot(self) -> tuple[list[Any], dict[str, int]]:
        """The ids of the jobs it holds and its counts, for the registry heartbeat."""
        return [r.job.id for r in self._active.values()], dict(self.counts)

    def __repr__(self) -> str:
        return describe(
            "AsyncWorker", self.queue.collection.full_name, self.queue.consumer_id, self.concurrency
        )

    @property
    def running(self) -> int:
        """How many jobs are running now."""
        return len(self._active)

    def stop(self) -> None:
        """Ask the worker to stop gracefully (what SIGTERM does); safe from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                current = None
            if current is not loop:
                loop.call_soon_threadsafe(self._request_stop)
                return
        self._request_stop()

    def _request_stop(self) -> None:
        self._stopping.set()
        self._changed.set()

    # ------------------------------------------------------------------ main loop

    async def run(self) -> int:
        """Work until stopped; returns an exit code (see :mod:`mongoqueue.worker`)."""
        self._loop = asyncio.get_running_loop()
        restore = self._install_signal_handlers()
        heartbeats: asyncio.Task[None] | None = None
        try:
            try:
                await self.queue.ensure_indexes()
            except QueueUnavailable as exc:
                log_cannot_start(exc)
                return EXIT_UNAVAILABLE
            log_started(
                self.queue.consumer_id,
                self.queue.collection.full_name,
                self.concurrency,
                self.queue.timeout,
                self.heartbeat,
            )
            heartbeats = asyncio.create_task(self._heartbeats(), name="mongoqueue-heartbeat")
            heartbeats.add_done_callback(lambda task: self._changed.set())
            await self._presence.start()
            if self._acks is not None:
                self._acks.start_task()
            code = EXIT_OK
            try:
                await self._work(heartbeats)
            except asyncio.CancelledError:
                await self._shutdown(0.0)
                await self._presence.stop()
                raise
            except Exception:
                log_failure()
                code = EXIT_ERROR
            await self._shutdown(self._shutdown_grace(code))
            log_stopped(self.queue.consumer_id, self.counts)
            await self._presence.stop()
            return code
        finally:
            if heartbeats is not None:
                heartbeats.cancel()
                await asyncio.gather(heartbeats, return_exceptions=True)
            await self.queue.close_stream()
            restore()

    async def _work(self, heartbeats: asyncio.Task[None]) -> None:
        pause = 0.0
        while await self._wait_for_slot(heartbeats):
            try:
                job, claimed_at = await self._next_job()
            except MongoQueueError as exc:
                pause = self._reconnect_pause(pause)
                log_reconnect(exc, pause)
                await self._wait(self._stopping, pause)
                continue
            if self._burst_done(job, self.running):
                log_burst_done()
                return
            pause = 0.0
            if job is None:
                continue
            if self._stopping.is_set():
                await self._release_unstarted(job)
                return
            self._start(job, claimed_at)

    async def _next_job(self) -> tuple[AsyncJob | None, float]:
        """The next job to run and when it was claimed (see ``Worker._next_job``)."""
        buffered = self._buffer.take()
        if buffered is not None:
            return buffered
        if self.prefetch and not self._dry:
            claimed_at = time.monotonic()
            free = self.concurrency - self.running
            size = claim_size(self.concurrency, self.running, self.prefetch)
            jobs = await self.queue.next_batch(size, hold=max(0, size - free))
            if jobs:
                self._buffer.put(jobs[1:], claimed_at)
                return jobs[0], claimed_at
        claimed_at = time.monotonic()
        job = await self.queue.next(wait=self._claim_wait(self.running))
        self._dry = job is None
        return job, claimed_at

    async def _wait_for_slot(self, heartbeats: asyncio.Task[None]) -> bool:
        """Wait until fewer than ``concurrency`` jobs run; False once stopping.

        Raises if the heartbeat task failed (the worker fails with it).
        """
        while (
            len(self._active) >= self.concurrency
            and not self._stopping.is_set()
            and not heartbeats.done()
        ):
            self._changed.clear()
            if not self._buffer:
                await self._changed.wait()
                continue
            await self._wait(self._changed, min(0.5, self._buffer.max_age / 2))
            for job in self._buffer.stale(time.monotonic()):
                await self._release_unstarted(job)  # waited too long: back to the queue
        if heartbeats.done():
            heartbeats.result()
            raise RuntimeError("the heartbeat task ended")
        return not self._stopping.is_set()

    @staticmethod
    async def _wait(event: asyncio.Event, seconds: float) -> None:
        """Wait for ``event`` at most ``seconds``."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    async def _release_unstarted(self, job: AsyncJob) -> None:
        try:
            await job.release()
        except MongoQueueError as exc:
            log_unreleased(job, exc)

    def _spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """A task the worker keeps a reference to until it ends."""
        task = asyncio.create_task(coroutine, name=name)
        self._background.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    # ------------------------------------------------------------------ one job

    def _start(self, job: AsyncJob, claimed_at: float) -> None:
        running = AsyncRunningJob(job, self.queue.timeout)
        running.last_beat = claimed_at  # its lease runs from the claim
        self._active[id(running)] = running
        running.task = self._spawn(self._execute(running), f"mongoqueue-job-{job.id}")

    async def _execute(self, running: AsyncRunningJob) -> None:
        job = running.job
        if job.prefetched:
            try:
                started = await self._start_prefetched(running)
            except asyncio.CancelledError:  # stopped before it started: release it
                _uncancel()
                started = False
                if running.stop_reason is not None:
                    await self._settle_stopped(running)
            if not started:
                self._finished(running)
                return
        log_job_started(job)
        try:
            try:
                await self.handler(job)
            except asyncio.CancelledError as exc:
                if running.stop_reason is None:  # not the worker's doing: the handler failed
                    await self._fail(running, exc)
                else:
                    _uncancel()
                    await self._settle_stopped(running)
            except BaseException as exc:
                await self._fail(running, exc)
            else:
                if running.stop_reason is not None:  # it swallowed the cancellation
                    await self._settle_stopped(running)
                elif self._ack_later(running):
                    pass
                elif (
                    await self._settle(running, "completed", job.complete)
                    and running.settled == "completed"
                ):
                    log_completed(running)
        finally:
            if running.left_behind and running.settled == "abandoned":
                log_discarded(running)
            self._finished(running)

    async def _start_prefetched(self, running: AsyncRunningJob) -> bool:
        """Mark a prefetched job started before its handler runs (see ``Worker``)."""
        async with running.lock:
            if running.settled is not None:
                return False
            try:
                if self._acks is None:
                    await running.job.start()
                    outcome: bool | MongoQueueError = True
                else:  # batched with other slots' starts and completions
                    outcome = await self._acks.start(running.job)
                if outcome is True:
                    running.last_beat = time.monotonic()
                    return True
                raise outcome or LeaseLost(lease_lost_message(running.job.id, "start", None))
            except MongoQueueError as exc:
                running.settle_failed(exc)
        self._record(running, "lost")
        return False

    def _retry_ack(self, running: AsyncRunningJob) -> None:
        """A batched completion failed transiently: try it again in a task of its own,
        the job heartbeating and holding its slot meanwhile (see ``Worker``)."""
        self._active[id(running)] = running

        async def retry() -> None:
            try:
                await running.acknowledge(running.job.complete)
                self._record(running, running.settled or "lost")
                if running.settled == "completed":
                    log_completed(running)
            finally:
                self._finished(running)

        self._spawn(retry(), f"mongoqueue-ack-{running.job.id}")

    def _ack_later(self, running: AsyncRunningJob) -> bool:
        """Hand a completion to the acknowledger (batched); False to complete it now."""
        if self._acks is None or running.lock.locked():
            return False
        if running.settled is not None or not running.job.held:
            return False
        running.claim("completed")
        self._acks.add(running, running.job)
        return True

    async def _fail(self, running: AsyncRunningJob, exc: BaseException) -> None:
        message = exception_message(type(exc), exc, exc.__traceback__)
        await self._settle(running, "failed", lambda: running.job.error(message))
        if running.settled == "failed":
            log_failed(running, exc)

    async def _settle(
        self,
        running: AsyncRunningJob,
        outcome: Outcome,
        action: Callable[[], Awaitable[object]],
        retry: bool = True,
    ) -> bool:
        if not await running.settle(outcome, action, retry):
            return False
        self._record(running, running.settled or "lost")
        return True

    async def _settle_stopped(self, running: AsyncRunningJob) -> None:
        """Settle a job the worker cancelled: a failed attempt (hard limit) or a release."""
        if running.stop_reason == "abandoned":
            message = self._abandon_message(self.queue.consumer_id)
            if await self._settle(running, "abandoned", lambda: running.job.error(message)):
                log_abandoned(running, message)
        elif await self._settle(running, "released", running.job.release, retry=False):
            log_released(running)

    async def _cancel(self, running: AsyncRunningJob, reason: StopReason) -> None:
        """Cancel the handler, give it ``CANCEL_WAIT_SECONDS`` to unwind, then move on."""
        task = running.task
        if task is None:
            return
        if running.stop_reason is None:
            running.stop_reason = reason
            task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_WAIT_SECONDS)
        if not task.done():
            log.warning(
                "job %s: its handler did not stop within %ss of being cancelled; it runs on "
                "in the background and its result is discarded",
                running.job.id,
                CANCEL_WAIT_SECONDS,
            )
            running.left_behind = True
            await self._settle_stopped(running)
            self._finished(running)

    def _finished(self, running: AsyncRunningJob) -> None:
        self._active.pop(id(running), None)
        self._changed.set()

    # ------------------------------------------------------------------ heartbeats

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            try:
                await self._beat()
            except Exception:  # no single failure stops the heartbeats
                log.exception("heartbeat pass failed; the heartbeats go on")

    async def _beat(self) -> None:
        """One pass: cancel handlers past the hard limit, extend the others' leases when due."""
        now = time.monotonic()
        for running in list(self._active.values()):
            if running.done or not running.beating:
                continue
            limit = None if running.stop_reason is not None else self.hard_limit
            due = running.due(now, self.heartbeat, limit)
            if due == "abandon":
                self._spawn(
                    self._cancel(running, "abandoned"), f"mongoqueue-abandon-{running.job.id}"
                )
            elif due == "beat":
                await self._extend(running)

    async def _extend(self, running: AsyncRunningJob) -> None:
        async with running.lock:
            if running.done or not running.job.held:
                return
            if running.job.heartbeat_paused:
                return
            try:
                await running.job.heartbeat()
                running.last_beat = time.monotonic()
            except MongoQueueError as exc:
                if log_heartbeat_failed(running, exc):
                    running.beating = False

    # ------------------------------------------------------------------ shutdown

    async def _shutdown(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for running jobs, then cancel and release the rest."""
        for job in self._buffer.drain():  # prefetched, never started: attempts unchanged
            await self._release_unstarted(job)
        deadline = time.monotonic() + grace
        if self._active:
            log_waiting(grace, len(self._active))
        while self._active and (left := deadline - time.monotonic()) > 0:
            self._changed.clear()
            await self._wait(self._changed, left)
        remaining = list(self._active.values())
        await asyncio.gather(*(self._cancel(running, "released") for running in remaining))
        if self._abandoning:  # hard-limit cancellations still unwinding (bounded too)
            await asyncio.wait(set(self._abandoning))
        if self._acks is not None:
            await self._acks.close()  # the last completions are written before it returns

    def _install_signal_handlers(self) -> Callable[[], None]:
        """Join the process's signal registry: one signal stops every worker of it.

        The handler runs in the main thread between two steps of whatever runs
        there; it wakes this worker's loop with ``call_soon_threadsafe``.
        """
        if not self.handle_signals:
            return lambda: None
        loop = asyncio.get_running_loop()
        return attach(
            id(self),
            lambda: loop.call_soon_threadsafe(self._request_stop),
            self._on_signal,
            repr(self),
        )


def _uncancel() -> None:
    """Forget the cancellation the worker asked for, so the task's later awaits run normally."""
    task = asyncio.current_task()
    uncancel = getattr(task, "uncancel", None)  # Python 3.11+
    if uncancel is not None:
        uncancel()
