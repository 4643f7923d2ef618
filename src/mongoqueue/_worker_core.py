"""The I/O-free core shared by :class:`Worker` and :class:`AsyncWorker`.

Like :mod:`mongoqueue._core` for the queues: everything a worker *decides*
lives here (validated settings, exit codes, when a running job is due for a
heartbeat or past its hard limit, the pause before reconnecting, what a second
signal does, how a failed settlement is counted, what the observer is told)
together with every log message, and the two workers only add the concurrency: threads and a
``threading.Condition`` in :mod:`mongoqueue.worker`, tasks and an
``asyncio.Event`` in :mod:`mongoqueue.aio_worker`. Nothing here talks to the
server, sleeps, or starts a thread or a task.
"""

from __future__ import annotations

import functools
import inspect
import logging
import signal
import threading
import time
from collections.abc import Mapping
from typing import Any, Generic, Literal, TypeVar

from .activity import ActivityBuffer
from .errors import (
    InvalidArgument,
    InvalidArgumentType,
    LeaseLost,
    MongoQueueError,
    QueueUnavailable,
)
from .job import JobData, lease_lost_message
from .validation import check_positive_int, check_seconds

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "MAX_RECONNECT_SECONDS",
    "MAX_TICK_SECONDS",
    "OUTCOMES",
    "Outcome",
    "RunningState",
    "WorkerCore",
    "handle_outcome",
    "is_async_handler",
    "result_of",
    "stop_summary",
]

log = logging.getLogger("mongoqueue.worker")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

#: Longest pause between retries while MongoDB is unreachable (seconds).
MAX_RECONNECT_SECONDS = 30.0

#: The heartbeat loop wakes at least this often to check hard limits (seconds).
MAX_TICK_SECONDS = 0.5

#: How a job left a worker's hands, the keys of ``Worker.counts``: ``completed``;
#: ``retried`` (an attempt failed or was abandoned, the job runs again after its backoff);
#: ``failed`` (failed for good: max attempts reached); ``released`` (given back at
#: shutdown); ``lost`` (the lease was lost before the worker settled it). Each settled
#: job counts once; ``abandoned`` counts those of the retried and failed that were
#: abandoned at the hard limit.
OUTCOMES = ("completed", "retried", "failed", "released", "lost", "abandoned")

#: Who settled a job and how (the worker's action; see :func:`result_of` for the outcome).
Outcome = Literal["completed", "failed", "abandoned", "released", "lost"]

J = TypeVar("J", bound=JobData)


def is_async_handler(handler: object) -> bool:
    """True for a coroutine function (``async def``), a partial of one, or an object
    whose ``__call__`` is one: the handlers :class:`AsyncWorker` runs."""
    while isinstance(handler, functools.partial):
        handler = handler.func
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(type(handler), "__call__", None)  # noqa: B004 - the method itself
    return inspect.iscoroutinefunction(call)


#: The first pause before trying an acknowledgement again, and the longest (seconds).
FIRST_ACK_PAUSE = 0.25
MAX_ACK_PAUSE = 2.0


def handle_outcome(job: JobData, intended: Outcome, ambiguous: bool) -> Outcome:
    """What became of a job the worker meant to settle as ``intended``, whose handle
    no longer holds it.

    The handler settled it itself (``complete``, ``error``, ``release``), or a
    fenced call found it no longer ours. When an earlier try of the worker's own
    acknowledgement failed transiently (``ambiguous``), that try may have been
    applied: a completed job is gone, an errored or released one is back in the
    queue unheld, and then the intended outcome stands.
    """
    let_go = job._let_go
    if let_go is None:
        return "completed"  # complete() lets go without a mark
    if let_go in ("failed", "released"):
        return let_go
    if ambiguous and (
        (let_go == "gone" and intended == "completed")
        or (let_go == "free" and intended in ("failed", "abandoned", "released"))
    ):
        return intended
    return "lost"


class RunningState(Generic[J]):
    """A job in a worker's hands: its handle, when it started, and who settled it.

    Each job is *settled* once, by whoever comes first: the handler (complete or
    error), the hard limit (abandon) or shutdown (release). The settlement is an
    *acknowledgement* to the server, tried again after a transient failure for as
    long as the lease allows; heartbeats go on until it is ``done``.
    """

    def __init__(self, job: J, lease: float) -> None:
        self.job = job
        self.lease = lease
        self.started = time.monotonic()
        self.last_beat = self.started
        self.settled: Outcome | None = None
        #: The acknowledgement is over (applied, or given up): no more heartbeats.
        self.done = False
        #: An acknowledgement failed transiently: it may have been applied.
        self.ambiguous = False
        self._ack_pause = 0.0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def due(
        self, now: float, interval: float, hard_limit: float | None
    ) -> Literal["abandon", "beat"] | None:
        """What the heartbeat loop owes this job at ``now`` (a monotonic time)."""
        if self.done:
            return None
        if self.settled is None and hard_limit is not None and now - self.started >= hard_limit:
            return "abandon"
        if now - self.last_beat >= interval:
            return "beat"
        return None

    def claim(self, outcome: Outcome) -> bool:
        """Take the right to settle the job as ``outcome``; False if it is already settled."""
        if self.settled is not None:
            return False
        self.settled = outcome
        return True

    def needs_ack(self) -> bool:
        """Whether the worker still has to write the settlement to the server.

        When the handle no longer holds the job (the handler settled it itself, or
        its lease was lost), records what happened instead and ends.
        """
        if self.done or self.settled is None:
            return False
        if self.job.held:
            return True
        intended = self.settled
        self.settled = handle_outcome(self.job, intended, self.ambiguous)
        self.done = True
        if self.settled == "lost":
            log.warning(
                "job %s: its lease was lost before the worker settled it (another consumer "
                "may run it: delivery is at least once)",
                self.job.id,
            )
        elif self.settled != intended:
            log.info("job %s: the handler settled it itself (%s)", self.job.id, self.settled)
        return False

    def acked(self) -> None:
        self.done = True

    def ack_failed(self, exc: MongoQueueError, retry: bool) -> float | None:
        """The acknowledgement raised ``exc``: the pause before trying again, or None
        when the worker gives up (the job's outcome is then recorded)."""
        if isinstance(exc, QueueUnavailable) and retry:
            self.ambiguous = True
            now = time.monotonic()
            left = self.last_beat + self.lease - now
            if left > 0:
                self._ack_pause = min(MAX_ACK_PAUSE, self._ack_pause * 2 or FIRST_ACK_PAUSE)
                log.warning(
                    "job %s: could not record it as %s (%s); trying again in %.2fs, while "
                    "its lease lasts (%.1fs)",
                    self.job.id,
                    self.settled,
                    exc,
                    self._ack_pause,
                    left,
                )
                return self._ack_pause
        self.done = True
        if isinstance(exc, LeaseLost):
            self.settled = (
                "lost"
                if self.job._let_go is None
                else handle_outcome(self.job, self.settled or "completed", self.ambiguous)
            )
            if self.settled == "lost":
                log.warning(
                    "lease lost: %s (the job may run again: delivery is at least once)", exc
                )
            else:
                log.info("job %s: an earlier try to record it was applied", self.job.id)
            return None
        self.settled = "lost"
        log.error("job %s: %s; it comes back when its lease expires", self.job.id, exc)
        return None

    def settle_failed(self, exc: MongoQueueError) -> None:
        """Settling raised ``exc`` and is not tried again (see :meth:`ack_failed`)."""
        self.ack_failed(exc, retry=False)


class WorkerCore:
    """The validated settings and the counts of a worker (sync or async).

    The subclasses check the queue and handler types, then call this with the
    queue's ``timeout`` (the default heartbeat is a third of it).
    """

    def __init__(
        self,
        timeout: float,
        *,
        concurrency: object,
        heartbeat: object,
        hard_limit: object,
        grace: object,
        burst: object,
        idle_wait: object,
        handle_signals: object,
        observer: Any,
        prefetch: object = None,
        batch_acks: object = True,
    ) -> None:
        self.concurrency = check_positive_int("concurrency", concurrency)
        #: Claimed jobs a worker keeps ready beyond its free slots (see :mod:`.prefetch`).
        self.prefetch = self.concurrency if prefetch is None else check_prefetch(prefetch)
        #: Completions go to the server in batches (``complete_many``).
        self.batch_acks = bool(batch_acks)
        if heartbeat is None:
            heartbeat = timeout / 3
        self.heartbeat = check_seconds("heartbeat", heartbeat, allow_zero=False)
        if self.heartbeat >= timeout:
            raise InvalidArgument(
                f"heartbeat ({self.heartbeat}s) must be shorter than the queue's timeout "
                f"({timeout}s), or leases expire between heartbeats"
            )
        self.hard_limit = (
            None
            if hard_limit is None
            else check_seconds("hard_limit", hard_limit, allow_zero=False)
        )
        self.grace = check_seconds("grace", grace, allow_zero=True)
        self.burst = bool(burst)
        self.idle_wait = check_seconds("idle_wait", idle_wait, allow_zero=False)
        self.handle_signals = bool(handle_signals)
        if observer is not None and not callable(observer):
            raise InvalidArgumentType(
                "observer must be called as observer(job, outcome, seconds), "
                f"got {type(observer).__name__}"
            )
        self.observer = observer
        #: Jobs settled by this worker, by outcome (see ``OUTCOMES``).
        self.counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        #: Events not yet flushed to the activity collection (see :mod:`mongoqueue.activity`).
        self.activity = ActivityBuffer()
        #: The queue's collection name, set by the subclass (the activity's ``queue``).
        self.queue_name = ""
        self._counts_lock = threading.Lock()

    def _record(self, running: RunningState[J], settled: str) -> None:
        """Count a settled job once by its outcome, tell the observer, buffer the event."""
        outcome = result_of(running.job, settled)
        with self._counts_lock:
            self.counts[outcome] += 1
            if settled == "abandoned":
                self.counts["abandoned"] += 1
        self.activity.add(self.queue_name, outcome)
        self._observe(running, outcome)

    def _acked(self, running: RunningState[J], outcome: bool | MongoQueueError) -> None:
        """A batched completion came back: count, observe and log it as one job.

        After a transient error (the server unreachable) the job's completion is
        tried again on its own while its lease lasts (``_retry_ack``), as
        an unbatched one is."""
        if isinstance(outcome, QueueUnavailable):
            self._retry_ack(running)
            return
        running.done = True
        if outcome is not True:
            job = running.job
            exc = (
                outcome
                if isinstance(outcome, MongoQueueError)
                else LeaseLost(lease_lost_message(job.id, "complete", None))
            )
            running.settle_failed(exc)
        self._record(running, running.settled or "completed")
        if running.settled == "completed":
            log_completed(running)

    def _retry_ack(self, running: Any) -> None:
        """Complete ``running`` again on its own, while its lease lasts (the workers')."""
        raise NotImplementedError

    def _observe(self, running: RunningState[J], outcome: str) -> None:
        """Tell the observer (metrics) that ``running`` was settled; its errors are logged."""
        if self.observer is None:
            return
        try:
            self.observer(running.job, outcome, running.elapsed)
        except Exception:
            log.exception("the worker's observer failed on job %s", running.job.id)

    @property
    def _tick(self) -> float:
        """Seconds between two passes of the heartbeat loop."""
        return min(self.heartbeat, MAX_TICK_SECONDS)

    def _abandon_message(self, consumer_id: str | int) -> str:
        return (
            f"abandoned: the handler was still running after the hard limit of "
            f"{self.hard_limit}s (worker {consumer_id})"
        )

    def _shutdown_grace(self, code: int) -> float:
        """Running jobs get the grace period after a requested stop, none after a failure."""
        return self.grace if code == EXIT_OK else 0.0

    def _claim_wait(self, running: int) -> float | None:
        """How long a claim waits for a job: not at all in burst mode with nothing running
        (burst exits as soon as nothing is due), else ``idle_wait``."""
        return None if self.burst and running == 0 else self.idle_wait

    def _burst_done(self, job: object, running: int) -> bool:
        """Burst mode ends when nothing is due for this worker and none of its jobs runs.

        Delayed jobs and other workers' running jobs do not keep it alive; a job of
        its own that fails and is retried later does not either.
        """
        return self.burst and job is None and running == 0

    @staticmethod
    def _reconnect_pause(previous: float) -> float:
        """The next pause while MongoDB is unreachable: 0.5 s, doubling, at most 30 s."""
        return min(MAX_RECONNECT_SECONDS, previous * 2 or 0.5)

    def _on_signal(self, signum: int, stopping: bool) -> int | None:
        """Log a SIGTERM/SIGINT; the exit code to leave with at once, or None to stop."""
        name = signal_name(signum)
        if stopping:
            log.warning(
                "second %s: exiting now; running jobs come back when their leases expire", name
            )
            logging.shutdown()
            return 128 + signum
        log.info(
            "%s: stopping; running jobs have %ss to finish (send it again to exit at once)",
            name,
            self.grace,
        )
        return None


def result_of(job: JobData, settled: str) -> str:
    """The outcome of a settled job: a failed or abandoned attempt is ``failed`` when the
    job reached its max attempts (its state is failed), else ``retried``."""
    if settled in ("failed", "abandoned"):
        return "failed" if job.state == "failed" else "retried"
    return settled


#: The largest prefetch buffer a worker accepts.
MAX_PREFETCH = 1000


def check_prefetch(value: object) -> int:
    """``prefetch``: an int from 0 (claim one job per free slot, no buffer) to 1000."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentType(f"prefetch must be an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_PREFETCH:
        raise InvalidArgument(
            f"prefetch must be from 0 (no prefetching) to {MAX_PREFETCH}, got {value!r}"
        )
    return value


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def describe(kind: str, full_name: str, consumer_id: str | int, concurrency: int) -> str:
    return f"<{kind} {full_name} consumer={consumer_id!r} concurrency={concurrency}>"


def check_handler(handler: object, want_async: bool) -> None:
    """The sync worker takes a plain callable, the async one a coroutine function."""
    if want_async and not is_async_handler(handler):
        raise InvalidArgumentType(
            "handler must be a coroutine function (async def) taking an AsyncJob, got "
            f"{type(handler).__name__}; run a plain function with Worker and a MongoQueue"
        )
    if not callable(handler):
        raise InvalidArgumentType(
            f"handler must be callable with a Job, got {type(handler).__name__}"
        )
    if not want_async and is_async_handler(handler):
        raise InvalidArgumentType(
            "handler is a coroutine function: run it with AsyncWorker on an AsyncMongoQueue "
            "(mongoqueue.aio_worker), or pass a plain function to Worker"
        )


# ------------------------------------------------------------------ log messages


def log_started(
    consumer_id: str | int, full_name: str, concurrency: int, lease: float, beat: float
) -> None:
    log.info(
        "worker %s started on %s (concurrency %d, lease %ss, heartbeat %ss)",
        consumer_id,
        full_name,
        concurrency,
        lease,
        round(beat, 3),
    )


def stop_summary(counts: Mapping[str, int]) -> str:
    """The stop summary: jobs by outcome, retries counted as attempts (not jobs)."""

    def n(count: int, one: str, many: str) -> str:
        return f"{count} {one if count == 1 else many}"

    parts = [
        n(counts.get("completed", 0), "job completed", "jobs completed"),
        n(counts.get("failed", 0), "job failed (final)", "jobs failed (final)"),
        n(counts.get("retried", 0), "attempt failed and retried", "attempts failed and retried"),
        n(counts.get("released", 0), "job released", "jobs released"),
        n(counts.get("lost", 0), "lease lost", "leases lost"),
    ]
    if counts.get("abandoned"):
        parts.append(f"{counts['abandoned']} of the failed attempts abandoned at the hard limit")
    return ", ".join(parts)


def log_stopped(consumer_id: str | int, counts: Mapping[str, int]) -> None:
    log.info("worker %s stopped: %s", consumer_id, stop_summary(counts))


def log_cannot_start(exc: Exception) -> None:
    log.error("cannot start: %s", exc)


def log_failure() -> None:
    """Called in an ``except`` block: logs the traceback."""
    log.exception("worker failed; releasing its jobs")


def log_reconnect(exc: Exception, pause: float) -> None:
    """A claim failed: transient errors are warnings, permanent ones errors (both retried)."""
    level = logging.WARNING if isinstance(exc, QueueUnavailable) else logging.ERROR
    log.log(level, "%s; retrying in %.1fs", exc, pause)


def log_burst_done() -> None:
    log.info("burst: no job is due; exiting")


def log_unreleased(job: JobData, exc: MongoQueueError) -> None:
    log.warning("could not release job %s (it comes back when its lease expires): %s", job.id, exc)


def log_job_started(job: JobData) -> None:
    log.info("job %s started (attempts so far: %d)", job.id, job.attempts)


def log_completed(running: RunningState[J]) -> None:
    log.info("job %s completed in %.2fs", running.job.id, running.elapsed)


def log_failed(running: RunningState[J], exc: BaseException) -> None:
    job = running.job
    if job.state == "failed":
        what, then = f"job {job.id} failed (final, attempt {job.attempts})", ""
    else:
        what, then = f"job {job.id} attempt {job.attempts} failed", ", will be retried"
    log.warning("%s after %.2fs%s: %s: %s", what, running.elapsed, then, type(exc).__name__, exc)


def log_abandoned(running: RunningState[J], message: str) -> None:
    then = "failed (final)" if running.job.state == "failed" else "will be retried"
    log.error("job %s: %s; the job %s; the worker moves on", running.job.id, message, then)


def log_discarded(running: RunningState[J]) -> None:
    log.warning(
        "abandoned job %s: its handler returned after %.2fs; result discarded",
        running.job.id,
        running.elapsed,
    )


def log_released(running: RunningState[J]) -> None:
    log.warning("job %s released after the grace period (attempts unchanged)", running.job.id)


def log_waiting(grace: float, count: int) -> None:
    log.info("waiting up to %ss for %d running job(s)", grace, count)


def log_heartbeat_failed(running: RunningState[J], exc: MongoQueueError) -> bool:
    """Log a failed heartbeat; True when the lease is lost (stop beating that job)."""
    if isinstance(exc, LeaseLost):
        # The job may run twice (at-least-once); its handler keeps going.
        log.warning("heartbeat: %s", exc)
        return True
    log.warning("heartbeat for job %s failed, will retry: %s", running.job.id, exc)
    return False
