"""Small test helpers: deadline-bounded polling, direct lease expiry, a command
listener, and consumer processes racing over one collection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

from pymongo import monitoring
from pymongo.collection import Collection

from mongoqueue import Job, MongoQueue

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]


def wait_for(probe: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.02) -> T:
    """Call ``probe`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def expire_lease(queue: MongoQueue, job: Job) -> None:
    """Make ``job``'s lease end now, as if its timeout had passed.

    Moves the lease end into the past on the server; the queue itself still has
    to notice the expiry. Used where waiting out a real lease would slow tests.
    """
    past = queue._now().replace(year=2000)
    result = queue.collection.update_one(
        {"_id": job.id, "lease_token": {"$type": "string"}},
        {"$set": {"lease_expires_at": past, "visible_at": past}},
    )
    assert result.matched_count == 1, "job is not held"


def expire_lease_of(collection: Collection[Any], job_id: Any) -> None:
    """Make the lease of the job ``job_id`` end in the past (for either twin's queue)."""
    past = datetime(2000, 1, 1, tzinfo=timezone.utc)
    result = collection.update_one(
        {"_id": job_id, "lease_token": {"$type": "string"}},
        {"$set": {"lease_expires_at": past, "visible_at": past}},
    )
    assert result.matched_count == 1, "job is not held"


class Commands(monitoring.CommandListener):
    """A command listener that records every command a client sends (``sent``)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def spawn_consumer(*args: str) -> subprocess.Popen[str]:
    """A consumer process (``python -m tests.integration.consumers ARGS``), stdout piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.consumers", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def check_race(procs: list[subprocess.Popen[str]], ids: set[str]) -> list[dict[str, Any]]:
    """Wait for racing ``race`` consumers and check their hold records: every job of
    ``ids`` completed exactly once, last, with no lease lost and no two holds of one job
    overlapping, by more than one consumer. Returns the records."""
    records: list[dict[str, Any]] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0
        records += [json.loads(line) for line in out.splitlines()]
    by_job: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
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
    return records


def kill_holding_consumer(proc: subprocess.Popen[str]) -> Any:
    """SIGKILL a ``hold`` consumer once it printed its claim; returns that claim."""
    from bson import json_util

    try:
        assert proc.stdout is not None
        claim = json_util.loads(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return claim
