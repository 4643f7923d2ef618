"""Heartbeats for a worker's running jobs, and the hard time limit.

While a handler runs, one background thread per worker extends the lease of
each running job every ``interval`` seconds (``Job.heartbeat()``), so a job that
runs longer than the queue's ``timeout`` is not delivered to a second consumer
while its worker is alive. If the worker dies, the heartbeats stop and the lease
expires as usual.

A handler still running after ``hard_limit`` seconds is *abandoned*: the
heartbeat thread records a failed attempt on its job (``Job.error()``), so the
job comes back after its retry backoff (or fails at ``max_attempts``), and the
worker frees the slot. Python cannot stop a thread, so the abandoned handler
keeps running in the background until it returns; its result is discarded.

Each job is *settled* once, by whoever comes first: the handler's thread
(complete or error), the heartbeat thread (abandon), or shutdown (release).
:class:`RunningJob` serialises that with a lock, and heartbeats take the same
lock, so two threads never write one job at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .errors import LeaseLost, MongoQueueError
from .job import Job

__all__ = ["Heartbeat", "RunningJob"]

log = logging.getLogger("mongoqueue.worker")

#: The heartbeat thread wakes at least this often to check hard limits (seconds).
MAX_TICK_SECONDS = 0.5


class RunningJob:
    """A job in a worker's hands: its handle, when it started, and who settled it."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.started = time.monotonic()
        self.last_beat = self.started
        self.settled: str | None = None
        self.lock = threading.Lock()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def settle(self, outcome: str, action: Callable[[], None]) -> bool:
        """Run ``action`` (complete, error, release) unless the job is already settled.

        Returns False when someone else settled it first. Errors of ``action``
        propagate; the job counts as settled either way (it was tried once).
        """
        with self.lock:
            if self.settled is not None:
                return False
            self.settled = outcome
            if self.job.held:
                action()
            return True


class Heartbeat:
    """The heartbeat thread of one worker."""

    def __init__(
        self,
        interval: float,
        hard_limit: float | None,
        on_abandon: Callable[[RunningJob], None],
    ) -> None:
        self.interval = interval
        self.hard_limit = hard_limit
        self._on_abandon = on_abandon
        self._jobs: dict[int, RunningJob] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mongoqueue-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def add(self, running: RunningJob) -> None:
        with self._lock:
            self._jobs[id(running)] = running

    def remove(self, running: RunningJob) -> None:
        with self._lock:
            self._jobs.pop(id(running), None)

    def _run(self) -> None:
        tick = min(self.interval, MAX_TICK_SECONDS)
        while not self._stop.wait(tick):
            self.beat()

    def beat(self) -> None:
        """One pass: abandon jobs past the hard limit, extend the others' leases when due."""
        with self._lock:
            jobs = list(self._jobs.values())
        now = time.monotonic()
        for running in jobs:
            if self.hard_limit is not None and now - running.started >= self.hard_limit:
                self.remove(running)
                self._on_abandon(running)
            elif now - running.last_beat >= self.interval:
                self._extend(running)

    def _extend(self, running: RunningJob) -> None:
        with running.lock:
            if running.settled is not None or not running.job.held:
                return
            try:
                running.job.heartbeat()
                running.last_beat = time.monotonic()
            except LeaseLost as exc:
                # The job may run twice (at-least-once); its handler keeps going.
                log.warning("heartbeat: %s", exc)
                self.remove(running)
            except MongoQueueError as exc:
                log.warning("heartbeat for job %s failed, will retry: %s", running.job.id, exc)
