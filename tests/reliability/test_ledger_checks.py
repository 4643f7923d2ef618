"""The ledger checks themselves: each invariant violation is caught (so the scenarios can fail)."""

from __future__ import annotations

import json
import time

from bson import ObjectId

from tests.reliability.tooling import WorkerPool, check


def _pool(collection, tmp_path, records, killed=None) -> WorkerPool:
    pool = WorkerPool("mongodb://unused", collection, tmp_path, timeout=1)
    (tmp_path / "1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    pool.killed = killed or {}
    return pool


def _hold(job, pid, attempts, start, end, outcome):
    base = {"job": job, "n": 0, "pid": pid, "worker": f"w{pid}", "attempts": attempts}
    lines = [{"ev": "start", "t": start, **base}]
    if end is not None:
        lines.append({"ev": "end", "t": end, "outcome": outcome, **base})
    return lines


def test_a_clean_ledger_passes(collection, tmp_path) -> None:
    job = str(ObjectId())
    records = _hold(job, 1, 0, 1.0, None, None) + _hold(job, 2, 1, 5.0, 6.0, "returned")
    figures = check("t", _pool(collection, tmp_path, records, {1: 2.0}), {job: 0}, {}, 0.0,
                    exact_attempts=True)  # fmt: skip
    assert (figures.lost, figures.overlaps, figures.attempt_errors) == (0, 0, 0)
    assert figures.deliveries == 2


def test_each_violation_is_counted(collection, tmp_path) -> None:
    overlapping, uncounted, lost, stuck = (str(ObjectId()) for _ in range(4))
    collection.insert_one({"_id": ObjectId(stuck), "state": "waiting"})
    records = (
        _hold(overlapping, 1, 0, 1.0, 3.0, "raised")
        + _hold(overlapping, 2, 1, 2.0, 4.0, "returned")  # starts before the first ended
        + _hold(uncounted, 1, 0, 5.0, 6.0, "raised")
        + _hold(uncounted, 2, 0, 7.0, 8.0, "returned")  # the failure was not counted
        + _hold(lost, 3, 0, 9.0, 10.0, "raised")  # gone, though no handler returned
    )
    ids = {overlapping: 0, uncounted: 1, lost: 2, stuck: 3}
    figures = check("t", _pool(collection, tmp_path, records), ids, {}, time.monotonic(),
                    exact_attempts=True)  # fmt: skip
    assert figures.overlaps == 1
    assert figures.attempt_errors == 1
    assert figures.lost == 2  # the one gone without completing, the one still queued
