"""Counts sampled over time, and the charts drawn from them (pure functions but the sampler).

Completed jobs are deleted, so no query can count completions after the fact.
The dashboard samples each queue's ``stats()`` every few seconds and derives
a *lower bound* of the completions between two samples: the jobs that left
the queue (waiting, delayed or running) and did not become failed. Jobs put
in the same interval hide as many completions, and requeues of failed jobs
are not counted; the workers' ``mongoqueue_jobs_completed_total`` metric is
the exact figure.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "History",
    "Sample",
    "Sampler",
    "completions",
    "completions_per_minute",
    "depth_series",
    "rate_per_minute",
]

log = logging.getLogger("mongoqueue.dashboard")

#: The states drawn on the depth chart (keys of :func:`mongoqueue.dashboard.queries.counts`).
DEPTH_SERIES = ("waiting", "delayed", "running", "failed")


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic() of the dashboard process
    counts: Mapping[str, int]
    wall: float = 0.0  # time.time() when taken: for the charts' clock labels only


def _active(counts: Mapping[str, int]) -> int:
    return counts["waiting"] + counts["delayed"] + counts["running"]


def completions(before: Sample, after: Sample) -> int:
    """A lower bound of the jobs completed between two samples (see the module docstring)."""
    left = _active(before.counts) - _active(after.counts)
    new_failed = max(0, after.counts["failed"] - before.counts["failed"])
    return max(0, left - new_failed)


class History:
    """The last ``window`` seconds of samples of each queue (thread-safe)."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._samples: dict[str, deque[Sample]] = {}
        self._lock = threading.Lock()

    def add(self, queue: str, sample: Sample) -> None:
        with self._lock:
            samples = self._samples.setdefault(queue, deque())
            samples.append(sample)
            while samples and samples[0].at < sample.at - self.window:
                samples.popleft()

    def samples(self, queue: str) -> list[Sample]:
        with self._lock:
            return list(self._samples.get(queue, ()))


class Sampler:
    """A daemon thread that samples the counts of every queue every ``interval`` seconds.

    ``read`` returns ``{queue name: counts}`` for the database's queues (one
    aggregation each); a failed read is logged and the next one tried later.
    """

    def __init__(
        self, read: Callable[[], Mapping[str, Mapping[str, int]]], history: History, interval: float
    ) -> None:
        self._read = read
        self.history = history
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mongoqueue-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def sample_once(self) -> None:
        at, wall = time.monotonic(), time.time()
        for name, counts in self._read().items():
            self.history.add(name, Sample(at, dict(counts), wall))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception as exc:  # the dashboard keeps serving; the next sample may work
                log.warning("could not sample the queues: %s", exc)
            self._stop.wait(self.interval)


# --------------------------------------------------------------------------- series
#
# The charts take plain series ``{name: [(epoch seconds, value), ...]}``; these
# turn samples into such series. Any other per-minute source (the workers'
# events) can be drawn the same way.


def completions_per_minute(samples: Sequence[Sample]) -> list[tuple[float, float]]:
    """Completions (lower bound) summed into wall-clock minutes: ``[(minute start, jobs)]``."""
    buckets: dict[float, float] = {}
    for before, after in itertools.pairwise(samples):
        if after.at <= before.at:
            continue
        minute = math.floor(after.wall / 60) * 60
        buckets[minute] = buckets.get(minute, 0) + completions(before, after)
    return sorted(buckets.items())


def rate_per_minute(samples: Sequence[Sample], seconds: float) -> float | None:
    """Completions per minute (lower bound) over the last ``seconds``; None without two samples."""
    if len(samples) < 2:
        return None
    last = samples[-1]
    recent = [s for s in samples if s.at >= last.at - seconds]
    if len(recent) < 2 or recent[-1].at <= recent[0].at:
        return None
    done = sum(completions(b, a) for b, a in itertools.pairwise(recent))
    return done * 60 / (recent[-1].at - recent[0].at)


def depth_series(samples: Sequence[Sample]) -> dict[str, list[tuple[float, float]]]:
    """Jobs by state at each sample: one series per state of ``DEPTH_SERIES``."""
    return {
        state: [(s.wall, float(s.counts.get(state, 0))) for s in samples] for state in DEPTH_SERIES
    }
