"""The server's clock stepped back mid-run (an NTP step, a failover to a primary that is
behind): no lease is taken over before it has ended on the server, no job is lost.

The server runs under libfaketime (Debian package ``faketime``, installed by
``scripts/test``), reading its clock offset from a file the test rewrites while the
consumers run: each step moves ``hello.localTime`` and ``$$NOW`` back by ``STEP``
seconds, more than a lease. Every consumer's estimate of the server's clock then runs
``STEP`` seconds ahead until it sees the server's time again, so to it every lease
looks expired. The holders heartbeat all along; a takeover would show as a holder's
``LeaseLost``, a claim of a job with attempts counted, or a ``repair()`` that freed one.
"""

from __future__ import annotations

import glob
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from mongoqueue import NO_BACKOFF, LeaseLost, MongoQueue
from mongoqueue.embedded import EmbeddedServer
from tests.conftest import _now_in_expr_works

JOBS = 24
CONSUMERS = 3
STEPS = 3
STEP = 2.5  # seconds back per step: more than a lease
LEASE = 1.5
HOLD = 0.3  # how long a handler holds its job
BEAT = 0.1  # heartbeat interval while holding


def _libfaketime() -> str | None:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    return found[0] if found else None


@pytest.fixture
def stepping_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A server whose clock offset (seconds) is read from a file at run time."""
    library = _libfaketime()
    if library is None:
        pytest.skip("libfaketime is not installed (scripts/test installs it: apt-get faketime)")
    offset = tmp_path / "offset"
    offset.write_text("+0\n")
    # The server process inherits these (this process was started without them).
    monkeypatch.setenv("LD_PRELOAD", library)
    monkeypatch.setenv("FAKETIME_TIMESTAMP_FILE", str(offset))
    monkeypatch.setenv("FAKETIME_NO_CACHE", "1")
    monkeypatch.setenv("FAKETIME_DONT_FAKE_MONOTONIC", "1")
    prefer_rust = os.environ.get("MONGOQUEUE_TEST_SERVER", "auto") != "python"
    server = EmbeddedServer(tmp_path / "server", prefer_rust=prefer_rust)
    try:
        server.start()
    finally:
        for name in ("LD_PRELOAD", "FAKETIME_TIMESTAMP_FILE", "FAKETIME_NO_CACHE"):
            monkeypatch.delenv(name)
        monkeypatch.delenv("FAKETIME_DONT_FAKE_MONOTONIC")
    try:
        yield server.uri, offset
    finally:
        server.close()


class Ledger:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.completed: set[Any] = set()
        self.lease_lost: list[str] = []
        self.counted_claims: list[str] = []  # claims of a job with attempts already counted
        self.repaired = 0
        self.errors: list[str] = []


def _consume(queue: MongoQueue, ledger: Ledger, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            job = queue.next()
        except Exception as exc:
            ledger.errors.append(f"{queue.consumer_id}: {exc!r}")
            return
        if job is None:
            time.sleep(0.02)
            continue
        if job.attempts:
            with ledger.lock:
                ledger.counted_claims.append(f"{job.id} attempts={job.attempts} {job.last_error}")
        try:
            until = time.monotonic() + HOLD
            while time.monotonic() < until:
                time.sleep(BEAT)
                job.heartbeat()
            job.complete()
            with ledger.lock:
                ledger.completed.add(job.id)
        except LeaseLost as exc:
            with ledger.lock:
                ledger.lease_lost.append(f"{queue.consumer_id}: {exc}")
        except Exception as exc:
            ledger.errors.append(f"{queue.consumer_id} holding {job.id}: {exc!r}")
            return


def _repair(queue: MongoQueue, ledger: Ledger, stop: threading.Event) -> None:
    while not stop.is_set():
        ledger.repaired += queue.repair()
        time.sleep(0.1)


def test_server_clock_stepped_back_takes_no_lease_early(
    stepping_server: tuple[str, Path], tmp_path: Path
) -> None:
    uri, offset = stepping_server
    started = time.monotonic()
    with MongoClient(uri) as client:
        if not _now_in_expr_works(client):
            pytest.xfail("this server answers $expr comparisons with $$NOW wrongly")
        jobs = client.reliability.clock_steps
        producer = MongoQueue(jobs, "producer", timeout=LEASE, retry=NO_BACKOFF)
        ids = set(producer.put_many([{"n": n} for n in range(JOBS)]))
        ledger = Ledger()
        stop = threading.Event()
        queues = [
            MongoQueue(jobs, f"consumer-{i}", timeout=LEASE, retry=NO_BACKOFF)
            for i in range(CONSUMERS)
        ]
        threads = [
            threading.Thread(target=_consume, args=(q, ledger, stop), daemon=True) for q in queues
        ]
        repairer = MongoQueue(jobs, "repairer", timeout=LEASE, retry=NO_BACKOFF)
        threads.append(threading.Thread(target=_repair, args=(repairer, ledger, stop), daemon=True))
        for thread in threads:
            thread.start()
        # Step the server's clock back while jobs are held.
        steps_seen = 0
        for step in range(1, STEPS + 1):
            time.sleep(0.8)
            before = client.admin.command("hello")["localTime"]
            offset.write_text(f"-{STEP * step}\n")
            deadline = time.monotonic() + 10
            while client.admin.command("hello")["localTime"] > before:
                assert time.monotonic() < deadline, "the server's clock did not step"
                time.sleep(0.02)
            steps_seen += 1
        # Waiting jobs are due on the server's clock again once it has caught up.
        deadline = time.monotonic() + 60 + STEPS * STEP
        while len(ledger.completed) + len(ledger.lease_lost) < JOBS and not ledger.errors:
            assert time.monotonic() < deadline, f"only {len(ledger.completed)} of {JOBS} done"
            time.sleep(0.05)
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        left = jobs.count_documents({})
    figures = {
        "scenario": "server clock steps",
        "jobs": JOBS,
        "consumers": CONSUMERS,
        "steps": steps_seen,
        "step_seconds": STEP,
        "lease_seconds": LEASE,
        "completed": len(ledger.completed),
        "early_takeovers": len(ledger.lease_lost) + len(ledger.counted_claims) + ledger.repaired,
        "lost": len(ids - ledger.completed),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(figures))
    assert ledger.errors == []
    assert steps_seen == STEPS
    assert ledger.lease_lost == []
    assert ledger.counted_claims == []
    assert ledger.repaired == 0
    assert ledger.completed == ids
    assert left == 0
