"""Counts sampled over time, and the charts drawn from them (pure functions but the sampler).

Completed jobs are deleted, so no query can count completions after the fact.
The dashboard samples each queue's ``counts()`` every few seconds and derives
a *lower bound* of the completions between two samples: the jobs that left
the queue (waiting, delayed or running) and did not become failed. Jobs put
in the same interval hide as many completions, and requeues of failed jobs
are not counted; the workers' ``mongoqueue_jobs_completed_total`` metric is
the exact figure.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["BarChart", "History", "LineChart", "Sample", "Sampler", "bar_chart", "completions"]

log = logging.getLogger("mongoqueue.dashboard")

#: The states drawn on the depth chart, with the ``counts()`` key each comes from.
DEPTH_SERIES = (
    ("waiting", "waiting"),
    ("delayed", "delayed"),
    ("running", "running"),
    ("failed", "failed"),
)


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic() of the dashboard process
    counts: Mapping[str, int]


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
        at = time.monotonic()
        for name, counts in self._read().items():
            self.history.add(name, Sample(at, dict(counts)))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception as exc:  # the dashboard keeps serving; the next sample may work
                log.warning("could not sample the queues: %s", exc)
            self._stop.wait(self.interval)


# --------------------------------------------------------------------------- charts


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    bars: list[Bar]
    peak: float  # the value of a full-height bar, per minute


@dataclass(frozen=True)
class LineChart:
    width: int
    height: int
    lines: list[tuple[str, str]]  # (state, SVG points)
    peak: int


def bar_chart(
    samples: Sequence[Sample], window: float, now: float, width: int = 600, height: int = 120
) -> BarChart:
    """Completions per minute (lower bound) between consecutive samples, placed on a time axis.

    The x axis spans ``window`` seconds ending at ``now``; each bar covers the
    interval between two samples and its height is the rate over it.
    """
    rates: list[tuple[float, float, float, int]] = []
    for before, after in itertools.pairwise(samples):
        seconds = after.at - before.at
        if seconds <= 0:
            continue
        done = completions(before, after)
        rates.append((before.at, after.at, done * 60 / seconds, done))
    peak = max((rate for *_, rate, _ in rates), default=0.0) or 1.0
    bars = []
    start = now - window
    for t0, t1, rate, done in rates:
        x0 = max(0.0, (t0 - start) / window * width)
        x1 = max(x0, (t1 - start) / window * width)
        h = rate / peak * height
        bars.append(
            Bar(
                round(x0, 1),
                round(height - h, 1),
                round(max(x1 - x0 - 1, 1), 1),
                round(h, 1),
                f"{done} completed in {t1 - t0:.0f}s ({rate:.1f}/min), {now - t1:.0f}s ago",
            )
        )
    return BarChart(width, height, bars, round(peak, 1))


def line_chart(
    samples: Sequence[Sample], window: float, now: float, width: int = 600, height: int = 120
) -> LineChart:
    """Jobs by state over the window, one polyline per state in ``DEPTH_SERIES``."""
    peak = max((s.counts[key] for s in samples for _, key in DEPTH_SERIES), default=0) or 1
    start = now - window
    lines = []
    for state, key in DEPTH_SERIES:
        points = " ".join(
            f"{max(0.0, (s.at - start) / window * width):.1f},"
            f"{height - s.counts[key] / peak * height:.1f}"
            for s in samples
        )
        lines.append((state, points))
    return LineChart(width, height, lines, peak)
