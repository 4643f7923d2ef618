"""Counts sampled over time, and the jobs-by-state series drawn from them (pure but the sampler).

The dashboard samples each queue's ``counts()`` every few seconds for the chart
of jobs by state. Throughput is *not* derived from these samples (a purge or a
put would look like completions): it is drawn from what the workers recorded,
see :mod:`mongoqueue.activity` and :mod:`mongoqueue.dashboard.observed`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["History", "Sample", "Sampler", "depth_series"]

log = logging.getLogger("mongoqueue.dashboard")

#: The states drawn on the depth chart (keys of :func:`mongoqueue.dashboard.queries.counts`).
DEPTH_SERIES = ("waiting", "delayed", "running", "failed")


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic() of the dashboard process
    counts: Mapping[str, int]
    wall: float = 0.0  # time.time() when taken: for the charts' clock labels only


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
    """A daemon thread that samples ``counts()`` of every queue every ``interval`` seconds.

    ``read`` returns ``{queue name: counts}`` for the database's queues; a failed
    read is logged and the next one tried later.
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
# turn samples into such series (the workers' per-minute events are turned
# into series by :func:`mongoqueue.dashboard.observed.throughput_series`).


def depth_series(samples: Sequence[Sample]) -> dict[str, list[tuple[float, float]]]:
    """Jobs by state at each sample: one series per state of ``DEPTH_SERIES``."""
    return {
        state: [(s.wall, float(s.counts.get(state, 0))) for s in samples] for state in DEPTH_SERIES
    }
