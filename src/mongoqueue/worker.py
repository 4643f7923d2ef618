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
0     stopped as asked (signal, :meth:`Worker.stop`, or ``burst`` and the queue
      is empty); running jobs finished or were released
1     the worker failed with an unexpected error (logged); jobs were released
2     bad usage: invalid arguments, handler not importable (the CLI)
3     MongoDB could not be reached at start
128+N exited at once on a second signal N (130 for SIGINT, 143 for SIGTERM)
====  ============================================================================

Logs go to the ``mongoqueue.worker`` logger of the standard ``logging`` module.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from .errors import (
    InvalidArgument,
    InvalidArgumentType,
    LeaseLost,
    MongoQueueError,
    QueueUnavailable,
)
from .heartbeat import Heartbeat, RunningJob
from .job import Job, exception_message
from .queue import MongoQueue
from .validation import check_positive_int, check_seconds

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "Handler",
    "Observer",
    "Worker",
]

log = logging.getLogger("mongoqueue.worker")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

Handler = Callable[[Job], Any]

#: ``observer(job, outcome, seconds)``: called once per job this worker settles, with
#: the outcome (completed, failed, abandoned, released, lost) and the handler's time.
Observer = Callable[[Job, str, float], None]

#: Longest pause between retries while MongoDB is unreachable (seconds).
MAX_RECONNECT_SECONDS = 30.0


class Worker:
    """Runs ``handler(job)`` on the jobs of ``queue``.

    ``concurrency``: jobs run at once (one thread each). ``heartbeat``: seconds
    between lease extensions (default: a third of the queue's timeout).
    ``hard_limit``: seconds after which a handler is abandoned and its job
    recorded as failed (default: no limit). ``grace``: seconds a shutdown waits
    for running jobs before releasing them. ``burst``: exit once the queue has
    no waiting, delayed or running job. ``idle_wait``: longest single wait for a
    job, which bounds how long a stop request takes to be noticed.
    ``handle_signals``: install the SIGTERM/SIGINT handlers in :meth:`run`
    (only possible from the main thread). ``observer``: called with ``(job,
    outcome, seconds)`` as each job is settled (see :mod:`mongoqueue.metrics`).
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
    ) -> None:
        if not isinstance(queue, MongoQueue):
            raise InvalidArgumentType(f"queue must be a MongoQueue, got {type(queue).__name__}")
        if not callable(handler):
            raise InvalidArgumentType(
                f"handler must be callable with a Job, got {type(handler).__name__}"
            )
        self.queue = queue
        self.handler = handler
        self.concurrency = check_positive_int("concurrency", concurrency)
        if heartbeat is None:
            heartbeat = queue.timeout / 3
        self.heartbeat = check_seconds("heartbeat", heartbeat, allow_zero=False)
        if self.heartbeat >= queue.timeout:
            raise InvalidArgument(
                f"heartbeat ({self.heartbeat}s) must be shorter than the queue's timeout "
                f"({queue.timeout}s), or leases expire between heartbeats"
            )
        self.hard_limit = (
            None
            if hard_limit is None
            else check_seconds("hard_limit", hard_limit, allow_zero=False)
        )
        self.grace = check_seconds("grace", grace, allow_zero=True)
        self.burst = bool(burst)
        self.idle_wait = check_seconds("idle_wait", idle_wait, allow_zero=False)
        self.handle_signals = handle_signals
        self.observer = observer
        self._stopping = threading.Event()
        self._active: dict[int, RunningJob] = {}
        self._changed = threading.Condition()
        self._heartbeat = Heartbeat(self.heartbeat, self.hard_limit, self._abandon)
        #: Jobs settled by this worker, by outcome: completed, failed, abandoned, released, lost.
        self.counts: dict[str, int] = dict.fromkeys(
            ("completed", "failed", "abandoned", "released", "lost"), 0
        )

    def __repr__(self) -> str:
        return (
            f"<Worker {self.queue.collection.full_name} consumer={self.queue.consumer_id!r} "
            f"concurrency={self.concurrency}>"
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
                log.error("cannot start: %s", exc)
                return EXIT_UNAVAILABLE
            log.info(
                "worker %s started on %s (concurrency %d, lease %ss, heartbeat %ss)",
                self.queue.consumer_id,
                self.queue.collection.full_name,
                self.concurrency,
                self.queue.timeout,
                round(self.heartbeat, 3),
            )
            self._heartbeat.start()
            code = EXIT_OK
            try:
                self._loop()
            except Exception:
                log.exception("worker failed; releasing its jobs")
                code = EXIT_ERROR
            self._shutdown(self.grace if code == EXIT_OK else 0.0)
            log.info("worker %s stopped: %s", self.queue.consumer_id, self.counts)
            return code
        finally:
            self._heartbeat.stop()
            restore()

    def _loop(self) -> None:
        pause = 0.0
        while self._wait_for_slot():
            try:
                job = self.queue.next(wait=self.idle_wait)
                if job is None and self.burst and self.running == 0 and self.queue.size() == 0:
                    log.info("burst: the queue is empty")
                    return
            except QueueUnavailable as exc:
                pause = min(MAX_RECONNECT_SECONDS, pause * 2 or 0.5)
                log.warning("%s; retrying in %.1fs", exc, pause)
                self._stopping.wait(pause)
                continue
            pause = 0.0
            if job is None:
                continue
            if self._stopping.is_set():
                self._release_unstarted(job)
                return
            self._start(job)

    def _wait_for_slot(self) -> bool:
        """Block until fewer than ``concurrency`` jobs run; False once stopping."""
        with self._changed:
            while len(self._active) >= self.concurrency and not self._stopping.is_set():
                self._changed.wait(0.5)
        return not self._stopping.is_set()

    def _release_unstarted(self, job: Job) -> None:
        try:
            job.release()
        except MongoQueueError as exc:
            log.warning(
                "could not release job %s (it comes back when its lease expires): %s", job.id, exc
            )

    # ------------------------------------------------------------------ one job

    def _start(self, job: Job) -> None:
        running = RunningJob(job)
        with self._changed:
            self._active[id(running)] = running
        self._heartbeat.add(running)
        thread = threading.Thread(
            target=self._execute, args=(running,), name=f"mongoqueue-job-{job.id}", daemon=True
        )
        thread.start()

    def _execute(self, running: RunningJob) -> None:
        job = running.job
        log.info("job %s started (attempts so far: %d)", job.id, job.attempts)
        try:
            self.handler(job)
        except BaseException as exc:
            message = exception_message(type(exc), exc, exc.__traceback__)
            self._settle(running, "failed", lambda: job.error(message))
            if running.settled == "failed":
                log.warning(
                    "job %s failed after %.2fs: %s: %s",
                    job.id,
                    running.elapsed,
                    type(exc).__name__,
                    exc,
                )
        else:
            self._settle(running, "completed", job.complete)
            if running.settled == "completed":
                log.info("job %s completed in %.2fs", job.id, running.elapsed)
        finally:
            if running.settled == "abandoned":
                log.warning(
                    "abandoned job %s: its handler returned after %.2fs; result discarded",
                    job.id,
                    running.elapsed,
                )
            self._finished(running)

    def _settle(self, running: RunningJob, outcome: str, action: Callable[[], None]) -> bool:
        try:
            if not running.settle(outcome, action):
                return False
        except LeaseLost as exc:
            running.settled = "lost"
            log.warning("%s (the job may run again: delivery is at least once)", exc)
        except MongoQueueError as exc:
            running.settled = "lost"
            log.error("job %s: %s; it comes back when its lease expires", running.job.id, exc)
        with self._changed:
            self.counts[running.settled or outcome] += 1
        self._observe(running, running.settled or outcome)
        return True

    def _observe(self, running: RunningJob, outcome: str) -> None:
        if self.observer is None:
            return
        try:
            self.observer(running.job, outcome, running.elapsed)
        except Exception:
            log.exception("the worker's observer failed on job %s", running.job.id)

    def _abandon(self, running: RunningJob) -> None:
        """Called by the heartbeat thread when a handler passes the hard limit."""
        message = (
            f"abandoned: the handler was still running after the hard limit of "
            f"{self.hard_limit}s (worker {self.queue.consumer_id})"
        )
        if self._settle(running, "abandoned", lambda: running.job.error(message)):
            log.error("job %s: %s; the worker moves on", running.job.id, message)
            self._finished(running)

    def _finished(self, running: RunningJob) -> None:
        self._heartbeat.remove(running)
        with self._changed:
            self._active.pop(id(running), None)
            self._changed.notify_all()

    # ------------------------------------------------------------------ shutdown

    def _shutdown(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for running jobs, then release the rest."""
        deadline = time.monotonic() + grace
        with self._changed:
            if self._active:
                log.info("waiting up to %ss for %d running job(s)", grace, len(self._active))
            while self._active and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(min(left, 0.5))
            remaining = list(self._active.values())
        for running in remaining:
            if self._settle(running, "released", running.job.release):
                log.warning(
                    "job %s released after the grace period (attempts unchanged)",
                    running.job.id,
                )
            self._finished(running)

    def _install_signal_handlers(self) -> Callable[[], None]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if self._stopping.is_set():
                log.warning(
                    "second %s: exiting now; running jobs come back when their leases expire",
                    name,
                )
                logging.shutdown()
                os._exit(128 + signum)
            log.info(
                "%s: stopping; running jobs have %ss to finish (send it again to exit at once)",
                name,
                self.grace,
            )
            self.stop()

        for sig in previous:
            signal.signal(sig, on_signal)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore
