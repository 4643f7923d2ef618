"""The worker: claims jobs and runs a handler on each, ``concurrency`` at a time.

``Worker(queue, handler, concurrency=4).run()`` (or ``mongoqueue worker
module:function``):

* calls ``handler(job)`` in a thread per running job; completes the job when the
  handler returns and records the traceback with ``job.error()`` when it raises
  (a handler may also complete, error or release the job itself);
* extends each running job's lease every ``heartbeat`` seconds, and abandons a
  handler still running after ``hard_limit`` seconds (see
  :mod:`mongoqueue.heartbeat`);
* waits for work with ``next(wait=)``, so an idle worker is woken as soon as a
  job is put;
* on SIGTERM or SIGINT stops claiming, lets the running jobs finish for up to
  ``grace`` seconds, then releases the rest (their attempts unchanged); a
  second signal exits at once, and the leases of its jobs expire so they are
  delivered again. No job is lost either way.

Exit codes of :meth:`Worker.run` (and of ``mongoqueue worker``):

====  ============================================================================
0     stopped as asked (signal, :meth:`Worker.stop`, or ``burst`` and no job is
      due for it); running jobs finished or were released
1     the worker failed with an unexpected error (logged); jobs were released
2     bad usage: invalid arguments, handler not importable (the CLI)
3     MongoDB could not be reached at start
128+N exited at once on a second signal N (130 for SIGINT, 143 for SIGTERM)
====  ============================================================================

Logs go to the ``mongoqueue.worker`` logger of the standard ``logging`` module.

:class:`~mongoqueue.aio_worker.AsyncWorker` is the asyncio twin, for coroutine
handlers; every decision both make (settings, timings, outcomes, exit codes,
log messages) lives in :mod:`mongoqueue._worker_core`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ._signals import attach
from ._worker_core import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    MAX_RECONNECT_SECONDS,
    Outcome,
    WorkerCore,
    check_handler,
    describe,
    log_abandoned,
    log_burst_done,
    log_cannot_start,
    log_completed,
    log_discarded,
    log_failed,
    log_failure,
    log_job_started,
    log_reconnect,
    log_released,
    log_started,
    log_stopped,
    log_unreleased,
    log_waiting,
)
from .errors import InvalidArgumentType, LeaseLost, MongoQueueError, QueueUnavailable
from .heartbeat import Heartbeat, RunningJob
from .job import Job, exception_message, lease_lost_message
from .prefetch import Acknowledger, PrefetchBuffer, buffer_max_age, claim_size
from .presence import WorkerPresence
from .queue import MongoQueue

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "MAX_RECONNECT_SECONDS",
    "Handler",
    "Observer",
    "Worker",
]

Handler = Callable[[Job], Any]

#: ``observer(job, outcome, seconds)``: called once per job this worker settles, with
#: the outcome (completed, retried, failed, released, lost) and the handler's time.
Observer = Callable[[Job, str, float], None]


class Worker(WorkerCore):
    """Runs ``handler(job)`` on the jobs of ``queue``.

    ``concurrency``: jobs run at once (one thread each). ``heartbeat``: seconds
    between lease extensions (default: a third of the queue's timeout).
    ``hard_limit``: seconds after which a handler is abandoned and its job
    recorded as failed (default: no limit). ``grace``: seconds a shutdown waits
    for running jobs before releasing them. ``burst``: exit once no job is due
    for this worker and none of its own runs (delayed jobs and other workers'
    running jobs do not keep it alive). ``idle_wait``: longest single wait for a
    job, which bounds how long a stop request takes to be noticed.
    ``handle_signals``: install the SIGTERM/SIGINT handlers in :meth:`run`
    (only possible from the main thread). ``observer``: called with ``(job,
    outcome, seconds)`` as each job is settled (see :mod:`mongoqueue.metrics`).
    ``prefetch``: jobs claimed beyond the free slots and kept ready in a buffer
    (default: ``concurrency``; 0: one claim per free slot). ``batch_acks``: send
    completions in batches (one bulk write every few ms). See :mod:`mongoqueue.prefetch`.
    """

    def __init__(
        self,
        queue: MongoQueue,
        handler: Handler,
        *,
        concurrency: int = 1,
        heartbeat: float | None = None,
        hard_limit: float | None = None,
        grace: float = 30.0,
        burst: bool = False,
        idle_wait: float = 1.0,
        handle_signals: bool = True,
        observer: Observer | None = None,
        prefetch: int | None = None,
        batch_acks: bool = True,
    ) -> None:
        if not isinstance(queue, MongoQueue):
            raise InvalidArgumentType(f"queue must be a MongoQueue, got {type(queue).__name__}")
        check_handler(handler, want_async=False)
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
        self._stopping = threading.Event()
        self._active: dict[int, RunningJob] = {}
        self._changed = threading.Condition()
        self._heartbeat = Heartbeat(self.heartbeat, self.hard_limit, self._abandon, self._tick)
        self.queue_name = queue.collection.name
        if not queue.batch_claims:
            self.prefetch = 0
        self._buffer: PrefetchBuffer[Job] = PrefetchBuffer(
            buffer_max_age(queue.timeout, self.heartbeat)
        )
        self._dry = False  # the last batch claim found nothing: wait with next()
        self._acks: Acknowledger[Job, RunningJob] | None = (
            Acknowledger(self._acked) if self.batch_acks else None
        )
        self._presence = WorkerPresence(
            queue.collection.database,
            queue.consumer_id,
            kind="Worker",
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
        with self._changed:
            return [r.job.id for r in self._active.values()], dict(self.counts)

    def __repr__(self) -> str:
        return describe(
            "Worker", self.queue.collection.full_name, self.queue.consumer_id, self.concurrency
        )

    @property
    def running(self) -> int:
        """How many jobs are running now."""
        with self._changed:
            return len(self._active)

    def stop(self) -> None:
        """Ask the worker to stop gracefully (thread-safe; what SIGTERM does)."""
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ main loop

    def run(self) -> int:
        """Work until stopped; returns an exit code (see the module docstring)."""
        restore = self._install_signal_handlers()
        try:
            try:
                self.queue.ensure_indexes()
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
            self._heartbeat.start()
            if self._acks is not None:
                self._acks.start_thread()
            self._presence.start()
            code = EXIT_OK
            try:
                self._loop()
            except Exception:
                log_failure()
                code = EXIT_ERROR
            self._shutdown(self._shutdown_grace(code))
            log_stopped(self.queue.consumer_id, self.counts)
            self._presence.stop()
            return code
        finally:
            self._heartbeat.stop()
            self.queue.close_stream()
            restore()

    def _loop(self) -> None:
        pause = 0.0
        while self._wait_for_slot():
            try:
                job, claimed_at = self._next_job()
            except MongoQueueError as exc:
                pause = self._reconnect_pause(pause)
                log_reconnect(exc, pause)
                self._stopping.wait(pause)
                continue
            if self._burst_done(job, self.running):
                log_burst_done()
                return
            pause = 0.0
            if job is None:
                continue
            if self._stopping.is_set():
                self._release_unstarted(job)
                return
            self._start(job, claimed_at)

    def _next_job(self) -> tuple[Job | None, float]:
        """The next job to run and when it was claimed: from the prefetch buffer, else
        a batch claim (free slots plus ``prefetch``), else a wait for one (``next``)."""
        buffered = self._buffer.take()
        if buffered is not None:
            return buffered
        if self.prefetch and not self._dry:
            claimed_at = time.monotonic()
            free = self.concurrency - self.running
            size = claim_size(self.concurrency, self.running, self.prefetch)
            jobs = self.queue.next_batch(size, hold=max(0, size - free))
            if jobs:
                self._buffer.put(jobs[1:], claimed_at)
                return jobs[0], claimed_at
        claimed_at = time.monotonic()
        job = self.queue.next(wait=self._claim_wait(self.running))
        self._dry = job is None
        return job, claimed_at

    def _wait_for_slot(self) -> bool:
        """Block until fewer than ``concurrency`` jobs run; False once stopping."""
        tick = min(0.5, self._buffer.max_age / 2)
        while True:
            with self._changed:
                if len(self._active) < self.concurrency or self._stopping.is_set():
                    break
                self._changed.wait(tick)
            for job in self._buffer.stale(time.monotonic()):
                self._release_unstarted(job)  # waited too long: back to the queue
        return not self._stopping.is_set()

    def _release_unstarted(self, job: Job) -> None:
        try:
            job.release()
        except MongoQueueError as exc:
            log_unreleased(job, exc)

    # ------------------------------------------------------------------ one job

    def _start(self, job: Job, claimed_at: float) -> None:
        running = RunningJob(job, self.queue.timeout)
        running.last_beat = claimed_at  # its lease runs from the claim
        with self._changed:
            self._active[id(running)] = running
        self._heartbeat.add(running)
        thread = threading.Thread(
            target=self._execute, args=(running,), name=f"mongoqueue-job-{job.id}", daemon=True
        )
        thread.start()

    def _execute(self, running: RunningJob) -> None:
        job = running.job
        if job.prefetched and not self._start_prefetched(running):
            self._finished(running)
            return
        log_job_started(job)
        try:
            self.handler(job)
        except BaseException as exc:
            message = exception_message(type(exc), exc, exc.__traceback__)
            self._settle(running, "failed", lambda: job.error(message))
            if running.settled == "failed":
                log_failed(running, exc)
        else:
            if not self._ack_later(running):
                self._settle(running, "completed", job.complete)
                if running.settled == "completed":
                    log_completed(running)
        finally:
            if running.settled == "abandoned":
                log_discarded(running)
            self._finished(running)

    def _start_prefetched(self, running: RunningJob) -> bool:
        """Mark a prefetched job started before its handler runs (from now on an expiry
        of its lease counts an attempt); False when it can no longer run."""
        with running.lock:
            if running.settled is not None:
                return False
            try:
                if self._acks is None:
                    running.job.start()
                    outcome: bool | MongoQueueError = True
                else:  # batched with other slots' starts and completions
                    outcome = self._acks.start(running.job)
                if outcome is True:
                    running.last_beat = time.monotonic()
                    return True
                raise outcome or LeaseLost(lease_lost_message(running.job.id, "start", None))
            except MongoQueueError as exc:
                running.settle_failed(exc)
        self._record(running, "lost")
        return False

    def _retry_ack(self, running: RunningJob) -> None:
        """A batched completion failed transiently: try it again in a thread of its own,
        the job heartbeating and holding its slot meanwhile (see ``RunningJob``)."""
        with self._changed:
            self._active[id(running)] = running
        self._heartbeat.add(running)

        def retry() -> None:
            try:
                running.acknowledge(running.job.complete)
                self._record(running, running.settled or "lost")
                if running.settled == "completed":
                    log_completed(running)
            finally:
                self._finished(running)

        threading.Thread(target=retry, name=f"mongoqueue-ack-{running.job.id}", daemon=True).start()

    def _ack_later(self, running: RunningJob) -> bool:
        """Hand a completion to the acknowledger (batched); False to complete it now."""
        if self._acks is None:
            return False
        with running.lock:
            if running.settled is not None or not running.job.held:
                return False
            running.claim("completed")
        self._acks.add(running, running.job)
        return True

    def _settle(
        self,
        running: RunningJob,
        outcome: Outcome,
        action: Callable[[], object],
        retry: bool = True,
    ) -> bool:
        if not running.settle(outcome, action, retry):
            return False
        self._record(running, running.settled or "lost")
        return True

    def _count(self, running: RunningJob) -> None:
        self._record(running, running.settled or "lost")

    def _abandon(self, running: RunningJob) -> None:
        """Called by the heartbeat thread when a handler passes the hard limit.

        The failed attempt is written from a thread of its own, so that trying it
        again (a transient error) does not hold up the heartbeats of other jobs.
        """
        with running.lock:
            if not running.claim("abandoned"):
                return
        threading.Thread(
            target=self._record_abandon,
            args=(running,),
            name=f"mongoqueue-abandon-{running.job.id}",
            daemon=True,
        ).start()

    def _record_abandon(self, running: RunningJob) -> None:
        message = self._abandon_message(self.queue.consumer_id)
        running.acknowledge(lambda: running.job.error(message))
        self._count(running)
        if running.settled == "abandoned":
            log_abandoned(running, message)
        self._finished(running)

    def _finished(self, running: RunningJob) -> None:
        self._heartbeat.remove(running)
        with self._changed:
            self._active.pop(id(running), None)
            self._changed.notify_all()

    # ------------------------------------------------------------------ shutdown

    def _shutdown(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for running jobs, then release the rest."""
        for job in self._buffer.drain():  # prefetched, never started: attempts unchanged
            self._release_unstarted(job)
        deadline = time.monotonic() + grace
        with self._changed:
            if self._active:
                log_waiting(grace, len(self._active))
            while self._active and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(min(left, 0.5))
            remaining = list(self._active.values())
        for running in remaining:
            if self._settle(running, "released", running.job.release, retry=False):
                log_released(running)
            self._finished(running)
        if self._acks is not None:
            self._acks.close()  # the last completions are written before it returns

    def _install_signal_handlers(self) -> Callable[[], None]:
        """Join the process's signal registry: one signal stops every worker of it."""
        if not self.handle_signals:
            return lambda: None
        return attach(id(self), self.stop, self._on_signal, repr(self))
