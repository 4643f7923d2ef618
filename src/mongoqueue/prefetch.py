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
from collections.abc import Callable
from typing import Any, Generic, TypeVar

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


#: What a flush gets back for each job: True (done), False (lease lost) or the error.
Outcome = bool | MongoQueueError


def _outcomes(count: int, exc: BaseException) -> list[Outcome]:
    error = exc if isinstance(exc, MongoQueueError) else MongoQueueError(f"{exc!r}")
    return [error] * count


def _by_queue(completed: list[Any], started: list[Any]) -> list[tuple[Any, list[int], list[int]]]:
    """The batch split by each job's own queue (a task worker's jobs belong to several):
    ``(queue, indexes in completed, indexes in started)``."""
    groups: dict[int, tuple[Any, list[int], list[int]]] = {}
    for side, jobs in ((1, completed), (2, started)):
        for i, job in enumerate(jobs):
            groups.setdefault(id(job.queue), (job.queue, [], []))[side].append(i)
    return list(groups.values())


class _Start(Generic[J]):
    """A start a slot waits for."""

    def __init__(self, job: J) -> None:
        self.job = job
        self.done = threading.Event()
        self.outcome: Outcome = False


class Acknowledger(Generic[J, R]):
    """A thread that writes completions and starts in batches (one ``acknowledge``).

    ``add(item, job)`` queues a completion (the worker does not wait for it);
    ``start(job)`` queues the start of a prefetched job and waits for its outcome.
    The thread writes at once when a start is waiting, else after ``delay``
    seconds (or once ``max_batch`` completions are queued), and calls
    ``on_settled(item, outcome)`` for each completion. :meth:`close` writes what
    is left and stops the thread.
    """

    def __init__(
        self,
        on_settled: Callable[[R, Outcome], None],
        delay: float = ACK_DELAY_SECONDS,
        max_batch: int = ACK_MAX_BATCH,
    ) -> None:
        self._on_settled = on_settled
        self.delay = delay
        self.max_batch = max_batch
        self._pending: list[tuple[R, J]] = []
        self._starts: list[_Start[J]] = []
        self._changed = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="mongoqueue-acks", daemon=True)

    def start_thread(self) -> None:
        self._thread.start()

    def add(self, item: R, job: J) -> None:
        with self._changed:
            queued = not self._closing and self._thread.is_alive()
            if queued:
                self._pending.append((item, job))
                self._changed.notify_all()
        if not queued:
            self._flush([(item, job)], [])  # not running: write it here

    def start(self, job: J) -> Outcome:
        request = _Start(job)
        with self._changed:
            queued = not self._closing and self._thread.is_alive()
            if queued:
                self._starts.append(request)
                self._changed.notify_all()
        if queued:
            request.done.wait()
        else:
            self._flush([], [request])  # not running: write it here
        return request.outcome

    def close(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._thread.is_alive():
            self._thread.join()
        if self._pending or self._starts:  # never started: write here
            self._flush(self._pending, self._starts)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._starts and not self._closing:
                    self._changed.wait()
                if not self._pending and not self._starts:
                    return
                deadline = time.monotonic() + self.delay
                while (
                    not self._starts
                    and len(self._pending) < self.max_batch
                    and not self._closing
                    and (left := deadline - time.monotonic()) > 0
                ):
                    self._changed.wait(left)
                acks = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                starts = self._starts[: self.max_batch]
                del self._starts[: self.max_batch]
            self._flush(acks, starts)

    def _flush(self, acks: list[tuple[R, J]], starts: list[_Start[J]]) -> None:
        completed = [job for _, job in acks]
        started = [request.job for request in starts]
        done: list[Outcome] = [False] * len(acks)
        begun: list[Outcome] = [False] * len(starts)
        for queue, ci, si in _by_queue(completed, started):
            try:
                d, s = queue.acknowledge([completed[i] for i in ci], [started[i] for i in si])
            except Exception as exc:
                d, s = _outcomes(len(ci), exc), _outcomes(len(si), exc)
            for i, outcome in zip(ci, d, strict=True):
                done[i] = outcome
            for i, outcome in zip(si, s, strict=True):
                begun[i] = outcome
        for request, outcome in zip(starts, begun, strict=True):
            request.outcome = outcome
            request.done.set()
        for (item, _), outcome in zip(acks, done, strict=True):
            self._on_settled(item, outcome)


class AsyncAcknowledger(Generic[J, R]):
    """The asyncio twin of :class:`Acknowledger`: a task instead of a thread."""

    def __init__(
        self,
        on_settled: Callable[[R, Outcome], None],
        delay: float = ACK_DELAY_SECONDS,
        max_batch: int = ACK_MAX_BATCH,
    ) -> None:
        self._on_settled = on_settled
        self.delay = delay
        self.max_batch = max_batch
        self._pending: list[tuple[R, J]] = []
        self._starts: list[tuple[J, asyncio.Future[Outcome]]] = []
        self._changed = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._late: set[asyncio.Task[None]] = set()

    def start_task(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mongoqueue-acks")

    def add(self, item: R, job: J) -> None:
        self._pending.append((item, job))
        if len(self._pending) >= self.max_batch or len(self._pending) == 1:
            self._changed.set()
        if self._closing or self._task is None or self._task.done():
            # Not running: write it from a task of its own (nothing is lost).
            batch, self._pending = self._pending, []
            task = asyncio.get_running_loop().create_task(self._flush(batch, []))
            self._late.add(task)
            task.add_done_callback(self._late.discard)

    async def start(self, job: J) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        if self._closing or self._task is None or self._task.done():
            await self._flush([], [(job, future)])
        else:
            self._starts.append((job, future))
            self._changed.set()
        return await asyncio.shield(future)

    async def close(self) -> None:
        self._closing = True
        self._changed.set()
        if self._task is not None:
            await self._task
        while self._pending or self._starts:
            acks = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            starts = self._starts[: self.max_batch]
            del self._starts[: self.max_batch]
            await self._flush(acks, starts)

    async def _run(self) -> None:
        while True:
            while not self._pending and not self._starts and not self._closing:
                self._changed.clear()
                await self._changed.wait()
            if not self._pending and not self._starts:
                return
            if not self._starts and len(self._pending) < self.max_batch and not self._closing:
                self._changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), self.delay)
            acks = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            starts = self._starts[: self.max_batch]
            del self._starts[: self.max_batch]
            await self._flush(acks, starts)

    async def _flush(
        self, acks: list[tuple[R, J]], starts: list[tuple[J, asyncio.Future[Outcome]]]
    ) -> None:
        completed = [job for _, job in acks]
        started = [job for job, _ in starts]
        done: list[Outcome] = [False] * len(acks)
        begun: list[Outcome] = [False] * len(starts)
        for queue, ci, si in _by_queue(completed, started):
            try:
                d, s = await queue.acknowledge([completed[i] for i in ci], [started[i] for i in si])
            except Exception as exc:
                d, s = _outcomes(len(ci), exc), _outcomes(len(si), exc)
            for i, outcome in zip(ci, d, strict=True):
                done[i] = outcome
            for i, outcome in zip(si, s, strict=True):
                begun[i] = outcome
        for (_, future), outcome in zip(starts, begun, strict=True):
            if not future.done():
                future.set_result(outcome)
        for (item, _), outcome in zip(acks, done, strict=True):
            self._on_settled(item, outcome)
