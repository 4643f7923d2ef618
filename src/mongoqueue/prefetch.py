"""Prefetching and batched acknowledgements, shared by both workers.

A worker that claims one job per round trip before each handler runs is
claim-bound (about 250 jobs/s whatever its concurrency). Two things lift that:

* **Prefetch.** The worker claims with ``next_batch`` as many jobs as it has
  free slots plus ``prefetch`` more, and keeps the extra ones in a small
  :class:`PrefetchBuffer`, so a slot that frees up starts its next job without
  a round trip. Buffered jobs hold leases (claimed, not started; their attempts
  are not counted). A job that waited in the buffer longer than ``max_age``
  (at most a third of the lease) is released, attempts unchanged, so a buffered
  lease never expires and a job never waits in a buffer longer than that; a
  stopping worker releases its buffer first. The running job's first heartbeat
  is timed from its claim, not from its start.
* **Batched acknowledgements.** Completions made within ``delay`` seconds of
  each other go to the server in one ``complete_many`` (an unordered bulk write
  of fenced deletes, each with its own job's lease token). :class:`Acknowledger`
  (a thread) and :class:`AsyncAcknowledger` (a task) collect them and hand each
  job's outcome back to the worker, which counts, observes and logs it per job.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from .errors import MongoQueueError

__all__ = [
    "ACK_DELAY_SECONDS",
    "ACK_MAX_BATCH",
    "Acknowledger",
    "AsyncAcknowledger",
    "PrefetchBuffer",
    "buffer_max_age",
    "claim_size",
]

J = TypeVar("J")
R = TypeVar("R")

#: How long an acknowledger waits for more completions before it writes.
ACK_DELAY_SECONDS = 0.002
#: The most completions in one bulk write.
ACK_MAX_BATCH = 200
#: The most jobs claimed in one ``next_batch`` (the queue's own limit is higher).
MAX_CLAIM = 100


def claim_size(concurrency: int, running: int, prefetch: int) -> int:
    """How many jobs to claim at once: the free slots plus the buffer's size."""
    return max(1, min(MAX_CLAIM, concurrency - running + prefetch))


def buffer_max_age(timeout: float, heartbeat: float) -> float:
    """The longest a claimed job waits in a buffer before it is released: a third of
    the lease at most, and never longer than the heartbeat interval."""
    return min(timeout / 3, heartbeat)


class PrefetchBuffer(Generic[J]):
    """Claimed jobs waiting for a free slot, oldest first, with their claim times."""

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self._jobs: deque[tuple[J, float]] = deque()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._jobs)

    def put(self, jobs: list[J], claimed_at: float) -> None:
        with self._lock:
            self._jobs.extend((job, claimed_at) for job in jobs)

    def take(self) -> tuple[J, float] | None:
        """The oldest buffered job and when it was claimed (``time.monotonic()``)."""
        with self._lock:
            return self._jobs.popleft() if self._jobs else None

    def stale(self, now: float) -> list[J]:
        """Remove and return the jobs that waited longer than ``max_age``."""
        out = []
        with self._lock:
            while self._jobs and now - self._jobs[0][1] >= self.max_age:
                out.append(self._jobs.popleft()[0])
        return out

    def drain(self) -> list[J]:
        """Remove and return every buffered job."""
        with self._lock:
            out = [job for job, _ in self._jobs]
            self._jobs.clear()
        return out


class Acknowledger(Generic[J, R]):
    """A thread that completes jobs in batches with ``complete_many``.

    ``add(item, job)`` queues a completion; the thread waits ``delay`` seconds
    for more (or until ``max_batch`` are queued), writes them in one round trip,
    and calls ``on_settled(item, outcome)`` for each. :meth:`close` writes what
    is left and stops the thread.
    """

    def __init__(
        self,
        complete_many: Callable[[list[J]], list[bool]],
        on_settled: Callable[[R, bool | MongoQueueError], None],
        delay: float = ACK_DELAY_SECONDS,
        max_batch: int = ACK_MAX_BATCH,
    ) -> None:
        self._complete_many = complete_many
        self._on_settled = on_settled
        self.delay = delay
        self.max_batch = max_batch
        self._pending: list[tuple[R, J]] = []
        self._changed = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="mongoqueue-acks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, item: R, job: J) -> None:
        with self._changed:
            self._pending.append((item, job))
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._thread.is_alive():
            self._thread.join()
        elif self._pending:  # never started: write here
            self._flush(self._pending)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._closing:
                    self._changed.wait()
                if not self._pending:
                    return
                deadline = time.monotonic() + self.delay
                while (
                    len(self._pending) < self.max_batch
                    and not self._closing
                    and (left := deadline - time.monotonic()) > 0
                ):
                    self._changed.wait(left)
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
            self._flush(batch)

    def _flush(self, batch: list[tuple[R, J]]) -> None:
        try:
            outcomes: list[bool | MongoQueueError] = list(
                self._complete_many([job for _, job in batch])
            )
        except MongoQueueError as exc:
            outcomes = [exc] * len(batch)
        for (item, _), outcome in zip(batch, outcomes, strict=True):
            self._on_settled(item, outcome)


class AsyncAcknowledger(Generic[J, R]):
    """The asyncio twin of :class:`Acknowledger`: a task instead of a thread."""

    def __init__(
        self,
        complete_many: Callable[[list[J]], Awaitable[list[bool]]],
        on_settled: Callable[[R, bool | MongoQueueError], None],
        delay: float = ACK_DELAY_SECONDS,
        max_batch: int = ACK_MAX_BATCH,
    ) -> None:
        self._complete_many = complete_many
        self._on_settled = on_settled
        self.delay = delay
        self.max_batch = max_batch
        self._pending: list[tuple[R, J]] = []
        self._changed = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mongoqueue-acks")

    def add(self, item: R, job: J) -> None:
        self._pending.append((item, job))
        if len(self._pending) >= self.max_batch or len(self._pending) == 1:
            self._changed.set()

    async def close(self) -> None:
        self._closing = True
        self._changed.set()
        if self._task is not None:
            await self._task
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            await self._flush(batch)

    async def _run(self) -> None:
        while True:
            while not self._pending and not self._closing:
                self._changed.clear()
                await self._changed.wait()
            if not self._pending:
                return
            if len(self._pending) < self.max_batch and not self._closing:
                self._changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), self.delay)
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            await self._flush(batch)

    async def _flush(self, batch: list[tuple[R, J]]) -> None:
        try:
            outcomes: list[bool | MongoQueueError] = list(
                await self._complete_many([job for _, job in batch])
            )
        except MongoQueueError as exc:
            outcomes = [exc] * len(batch)
        for (item, _), outcome in zip(batch, outcomes, strict=True):
            self._on_settled(item, outcome)
