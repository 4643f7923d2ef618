"""What the workers reported, as the dashboard shows it: who holds a job, the throughput chart.

Reads the workers registry (:mod:`mongoqueue.registry`) and the per-minute
activity counts (:mod:`mongoqueue.activity`) that the workers write; the
chart is a pure function of those counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.database import Database

from ..presence import read_workers
from ..registry import WorkerInfo, holder

__all__ = ["ThroughputChart", "job_holders", "throughput_chart"]


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
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    label: str


@dataclass(frozen=True)
class ThroughputChart:
    width: int
    height: int
    bars: list[Bar]
    peak: int  # jobs per minute of a full-height bar
    completed: int  # in the window
    failed: int
    retried: int
    ticks: list[tuple[float, str]]  # (x, "HH:MM" UTC) under the axis


def throughput_chart(
    rows: Sequence[tuple[datetime, Mapping[str, int]]], width: int = 600, height: int = 120
) -> ThroughputChart:
    """One column per minute: completed jobs (green) under failed-for-good jobs (red)."""
    n = max(1, len(rows))
    slot = width / n
    peak = max((c.get("completed", 0) + c.get("failed", 0) for _, c in rows), default=0) or 1
    bars = []
    for i, (minute, counts) in enumerate(rows):
        done, failed = counts.get("completed", 0), counts.get("failed", 0)
        label = (
            f"{minute:%H:%M} UTC: {done} completed, {failed} failed (final), "
            f"{counts.get('retried', 0)} retried"
        )
        x = round(i * slot, 1)
        w = round(max(slot - 1, 1), 1)
        h_done = done / peak * height
        h_failed = failed / peak * height
        if done:
            bars.append(Bar(x, round(height - h_done, 1), w, round(h_done, 1), "#3a7", label))
        if failed:
            top = height - h_done - h_failed
            bars.append(Bar(x, round(top, 1), w, round(h_failed, 1), "#b00", label))
    step = max(1, n // 5)
    ticks = [(round(i * slot, 1), f"{rows[i][0]:%H:%M}") for i in range(0, len(rows), step)]
    return ThroughputChart(
        width,
        height,
        bars,
        peak,
        sum(c.get("completed", 0) for _, c in rows),
        sum(c.get("failed", 0) for _, c in rows),
        sum(c.get("retried", 0) for _, c in rows),
        ticks,
    )
