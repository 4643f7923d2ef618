"""Isolation and reliability with real OS processes racing on one collection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

import pytest
from bson import json_util

from mongoqueue import NO_BACKOFF, Job, LeaseLost, MongoQueue
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.consumers", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_four_processes_race_without_overlap(mongodb_uri, collection) -> None:
    jobs = 120
    queue = MongoQueue(collection, "producer", retry=NO_BACKOFF)
    ids = {str(i) for i in queue.put_many([{"n": n} for n in range(jobs)])}
    db, coll = collection.database.name, collection.name
    procs = [_spawn("race", mongodb_uri, db, coll, f"consumer-{i}", str(i)) for i in range(4)]
    records = []
    for proc in procs:
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0
        records += [json.loads(line) for line in out.splitlines()]

    by_job = defaultdict(list)
    for record in records:
        by_job[record["job"]].append(record)
    assert set(by_job) == ids  # nothing lost, nothing invented
    for job_id, holds in by_job.items():
        ends = [h["end"] for h in holds]
        assert ends.count("complete") == 1, (job_id, holds)  # completed exactly once
        assert "lease-lost" not in ends, (job_id, holds)
        holds.sort(key=lambda h: h["start"])
        assert holds[-1]["end"] == "complete"
        for earlier, later in pairwise(holds):  # no overlapping processing windows
            assert later["start"] >= earlier["end_at"], (job_id, holds)
    assert len({r["consumer"] for r in records}) > 1  # the race really had racers
    assert queue.stats()["total"] == 0


def test_killed_consumer_job_comes_back(mongodb_uri, collection) -> None:
    queue = MongoQueue(collection, "survivor", timeout=2, retry=NO_BACKOFF)
    job_id = queue.put({"work": "important"})
    proc = _spawn("hold", mongodb_uri, collection.database.name, collection.name, "2")
    try:
        claim = json_util.loads(proc.stdout.readline())
        assert claim["_id"] == job_id
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    assert queue.next() is None  # still leased to the dead consumer
    again = wait_for(queue.next, timeout=30)  # delivered again once the lease expired
    assert again.id == job_id
    assert again.attempts == 1
    assert again.payload == {"work": "important"}

    stale = Job(queue, claim)  # the dead consumer's handle
    with pytest.raises(LeaseLost, match="claimed again by 'survivor'"):
        stale.complete()
    again.complete()
    assert queue.stats()["total"] == 0
