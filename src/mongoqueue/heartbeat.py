"""Heartbeats for a worker's running jobs, and the hard time limit.

While a handler runs, one background thread per worker extends the lease of
each running job every ``interval`` seconds (``Job.heartbeat()``), so a job that
runs longer than the queue's ``timeout`` is not delivered to a second consumer
while its worker is alive. If the worker dies, the heartbeats stop and the lease
expires as usual.

A handler still running after ``hard_limit`` seconds is *abandoned*: the
heartbeat thread claims the job's settlement and a short-lived thread records a
failed attempt on it (``Job.error()``, tried again after a transient error while
the lease lasts, the heartbeats going on meanwhile), so the
job comes back after its retry backoff (or fails at ``max_attempts``), and the
worker frees the slot. Python cannot stop a thread, so the abandoned handler
keeps running in the background until it returns; its result is discarded.
(:mod:`mongoqueue.aio_worker` cancels the handler's task instead.)

Each job is *settled* once, by whoever comes first: the handler's thread
(complete or error), the heartbeat thread (abandon), or shutdown (release).
:class:`RunningJob` serialises that with a lock, and heartbeats take the same
lock, so two threads never write one job at once. No single failure stops the
heartbeat thread: a failed pass is logged and the next one runs. When a job is due for a
heartbeat or past its limit is decided in :mod:`mongoqueue._worker_core`,
shared with the async worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ._worker_core import MAX_TICK_SECONDS, Outcome, RunningState, log, log_heartbeat_failed
from .errors import MongoQueueError
from .job import Job

__all__ = ["Heartbeat", "RunningJob"]


class RunningJob(RunningState[Job]):
    """A job in a worker's hands, with the lock that serialises its writes."""

    def __init__(self, job: Job, lease: float) -> None:
        super().__init__(job, lease)
        self.lock = threading.Lock()

    def settle(self, outcome: Outcome, action: Callable[[], object], retry: bool = True) -> bool:
        """Run ``action`` (complete, error, release) unless the job is already settled.

        Returns False when someone else settled it first. A transient failure is
        tried again (``retry``) while the lease lasts, the heartbeats going on
        meanwhile; ``settled`` then says what happened (see ``RunningState``).
        """
        with self.lock:
            if not self.claim(outcome):
                return False
        self.acknowledge(action, retry)
        return True

    def acknowledge(self, action: Callable[[], object], retry: bool = True) -> None:
        """Write the settlement already claimed, trying again while the lease lasts."""
        while True:
            with self.lock:
                if not self.needs_ack():
                    return
                try:
                    action()
                    self.acked()
                    return
                except MongoQueueError as exc:
                    pause = self.ack_failed(exc, retry)
            if pause is None:
                return
            time.sleep(pause)


class Heartbeat:
    """The heartbeat thread of one worker."""

    def __init__(
        self,
        interval: float,
        hard_limit: float | None,
        on_abandon: Callable[[RunningJob], None],
        tick: float | None = None,
    ) -> None:
        self.interval = interval
        self.hard_limit = hard_limit
        self.tick = min(interval, MAX_TICK_SECONDS) if tick is None else tick
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
        while not self._stop.wait(self.tick):
            try:
                self.beat()
            except Exception:  # no single failure stops the heartbeats
                log.exception("heartbeat pass failed; the heartbeats go on")

    def beat(self) -> None:
        """One pass: abandon jobs past the hard limit, extend the others' leases when due."""
        with self._lock:
            jobs = list(self._jobs.values())
        now = time.monotonic()
        for running in jobs:
            due = running.due(now, self.interval, self.hard_limit)
            if due == "abandon":
                self._on_abandon(running)
            elif due == "beat":
                self._extend(running)

    def _extend(self, running: RunningJob) -> None:
        with running.lock:
            if running.done or not running.job.held:
                return
            if running.job.heartbeat_paused:
                return
            try:
                running.job.heartbeat()
                running.last_beat = time.monotonic()
            except MongoQueueError as exc:
                if log_heartbeat_failed(running, exc):
                    self.remove(running)
