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
from .errors import InvalidArgument, InvalidArgumentType, LeaseLost, MongoQueueError
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


class RunningState(Generic[J]):
    """A job in a worker's hands: its handle, when it started, and who settled it.

    Each job is *settled* once, by whoever comes first: the handler (complete or
    error), the hard limit (abandon) or shutdown (release).
    """

    def __init__(self, job: J) -> None:
        self.job = job
        self.started = time.monotonic()
        self.last_beat = self.started
        self.settled: Outcome | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def due(
        self, now: float, interval: float, hard_limit: float | None
    ) -> Literal["abandon", "beat"] | None:
        """What the heartbeat loop owes this job at ``now`` (a monotonic time)."""
        if hard_limit is not None and now - self.started >= hard_limit:
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

    def settle_failed(self, exc: MongoQueueError) -> None:
        """Settling raised ``exc``: the job counts as lost (its lease expires; it comes back)."""
        self.settled = "lost"
        if isinstance(exc, LeaseLost):
            log.warning("lease lost: %s (the job may run again: delivery is at least once)", exc)
        else:
            log.error("job %s: %s; it comes back when its lease expires", self.job.id, exc)


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
        """A batched completion came back: count, observe and log it as one job."""
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
    log.warning("%s; retrying in %.1fs", exc, pause)


def nothing_left(stats: Mapping[str, int]) -> bool:
    """Whether ``queue.stats()`` shows no job left to run: none available (waiting or
    delayed) and none locked. Failed jobs (``errors``) do not keep a burst worker going."""
    return stats["available"] + stats["locked"] == 0


def log_burst_done() -> None:
    log.info("burst: the queue is empty")


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
