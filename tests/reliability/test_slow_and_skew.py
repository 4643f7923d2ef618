"""Slow handlers and clock skew: leases hold across consumers whose wall clocks disagree.

Each consumer is a process whose ``time.time`` and ``datetime.now`` are off by
ten minutes (see :mod:`tests.reliability.skewed`), one ahead and one behind. If
the queue read wall clocks, the one behind would see no job as due yet and the
one ahead would take a job whose lease is still running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from mongoqueue import NO_BACKOFF, MongoQueue
from tests.reliability.tooling import ROOT

SKEW = 600.0  # ten minutes


class Skewed:
    """A ``tests.reliability.skewed`` consumer process."""

    def __init__(
        self, uri: str, collection: Any, name: str, skew: float, lease: float, wait: float = 60
    ) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MONGOQUEUE_TEST_SKEW": str(skew)}
        args = [uri, collection.database.name, collection.name, name, str(lease), str(wait)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.skewed", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.clock = self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"consumer exited with {self.proc.wait(timeout=30)}"
        record: dict[str, Any] = json.loads(line)
        return record

    def finish(self) -> dict[str, Any]:
        """Tell it to complete its job now; returns what happened."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        outcome = self.read()
        assert self.proc.wait(timeout=30) == 0
        return outcome

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def consumers() -> Any:
    started: list[Skewed] = []
    yield started
    for consumer in started:
        consumer.close()


@pytest.mark.parametrize("holder_skew", [-SKEW, SKEW], ids=["holder-behind", "holder-ahead"])
def test_skewed_consumers_respect_a_running_lease(
    mongodb_uri, collection, consumers, holder_skew
) -> None:
    queue = MongoQueue(collection, "producer", retry=NO_BACKOFF)
    job_id = queue.put({"n": 1})
    holder = Skewed(mongodb_uri, collection, "holder", holder_skew, lease=30)
    consumers.append(holder)
    assert abs(holder.clock["skew"] - holder_skew) < 5  # its wall clock really is off
    claim = holder.read()  # claimed at once, though its clock may be ten minutes behind
    assert (claim["job"], claim["attempts"]) == (str(job_id), 0)

    # The other consumer's clock is off the other way; it waits 3 s for a job while
    # the holder keeps its 30 s lease, and gets none.
    other = Skewed(mongodb_uri, collection, "other", -holder_skew, lease=30, wait=3)
    consumers.append(other)
    assert abs(other.clock["skew"] + holder_skew) < 5
    assert other.read() == {"job": None}, "the other consumer took a job under a running lease"
    assert queue.get(job_id).locked_by == "holder"
    assert holder.finish()["outcome"] == "completed"
    assert queue.stats()["total"] == 0


@pytest.mark.parametrize("holder_skew", [-SKEW, SKEW], ids=["holder-behind", "holder-ahead"])
def test_a_slow_handler_loses_its_job_and_its_late_complete_is_refused(
    mongodb_uri, collection, consumers, holder_skew
) -> None:
    lease = 2.0
    queue = MongoQueue(collection, "producer", retry=NO_BACKOFF)
    job_id = queue.put({"n": 1})
    slow = Skewed(mongodb_uri, collection, "slow", holder_skew, lease=lease)
    consumers.append(slow)
    first = slow.read()  # holds it with no heartbeat, past its lease
    other = Skewed(mongodb_uri, collection, "other", -holder_skew, lease=30)
    consumers.append(other)
    second = other.read()  # waits for the job; gets it once the lease has expired
    assert (second["job"], second["attempts"]) == (str(job_id), 1)  # the expiry counted once
    # Not before the lease ended (allowing for one round trip of clock estimate),
    # and not ten minutes off either way.
    assert lease - 0.5 <= second["start"] - first["start"] < 60
    late = slow.finish()
    assert late["outcome"].startswith("lease-lost")
    assert "claimed again by 'other'" in late["outcome"]
    assert other.finish()["outcome"] == "completed"
    assert queue.stats()["total"] == 0
