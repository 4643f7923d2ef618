"""What the workers reported, as the dashboard shows it: who holds a job, throughput, rate.

Reads the workers registry (:mod:`mongoqueue.registry`) and the per-minute
activity counts (:mod:`mongoqueue.activity`) that the workers write; the
throughput series (drawn by :func:`mongoqueue.dashboard.charts.time_chart`)
and the overview's rate are pure functions of those counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.database import Database

from ..presence import read_workers
from ..registry import WorkerInfo, holder

__all__ = ["RATE_MINUTES", "Throughput", "job_holders", "rate_per_minute", "throughput_series"]

#: Whole minutes over which the overview's completion rate is taken.
RATE_MINUTES = 5


def job_holders(
    db: Database[Any], docs: Iterable[Mapping[str, Any]]
) -> dict[Any, WorkerInfo | None]:
    """For each held job of ``docs`` (by ``_id``): its registered worker, or None."""
    held = [doc for doc in docs if isinstance(doc.get("lease_token"), str)]
    if not held:
        return {}
    consumers = {str(doc.get("locked_by")) for doc in held if doc.get("locked_by") is not None}
    workers = read_workers(db, consumer_ids=consumers) if consumers else []
    return {doc["_id"]: holder(doc["_id"], doc.get("locked_by"), workers) for doc in held}


@dataclass(frozen=True)
class Throughput:
    """Per-minute event counts as chart series, and their sums over the window."""

    series: dict[str, list[tuple[float, float]]]  # {event: [(epoch seconds, jobs), ...]}
    start: float  # epoch seconds: the first minute's start
    end: float  # the last minute's end
    completed: int
    failed: int  # failed for good (the last attempt)
    retried: int  # attempts that failed and were retried


def throughput_series(rows: Sequence[tuple[datetime, Mapping[str, int]]]) -> Throughput:
    """The workers' per-minute counts (from ``read_activity``) as series for ``time_chart``.

    ``completed`` is keyed by each minute's start (drawn as one bar per minute);
    ``failed`` and ``retried`` by the minute's middle (drawn as lines).
    """
    series: dict[str, list[tuple[float, float]]] = {"completed": [], "failed": [], "retried": []}
    for minute, counts in rows:
        at = minute.timestamp()
        series["completed"].append((at, float(counts.get("completed", 0))))
        series["failed"].append((at + 30, float(counts.get("failed", 0))))
        series["retried"].append((at + 30, float(counts.get("retried", 0))))
    start = rows[0][0].timestamp() if rows else 0.0
    end = rows[-1][0].timestamp() + 60 if rows else 60.0
    return Throughput(
        series,
        start,
        end,
        sum(c.get("completed", 0) for _, c in rows),
        sum(c.get("failed", 0) for _, c in rows),
        sum(c.get("retried", 0) for _, c in rows),
    )


def rate_per_minute(rows: Sequence[tuple[datetime, Mapping[str, int]]]) -> float:
    """Jobs completed per minute over the whole minutes of ``rows`` (the last, current one is
    left out: it is not over, and the workers' counts of it arrive with their heartbeats)."""
    whole = rows[:-1]
    if not whole:
        return 0.0
    return sum(c.get("completed", 0) for _, c in whole) / len(whole)
