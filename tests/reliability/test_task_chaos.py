"""Transactional tasks under SIGKILL: effects committed exactly once.

Workers (``mongoqueue worker tests.reliability.task_chaos_app:app``) run jobs that
each add one to a counter and append a ledger entry, while a chaos loop SIGKILLs
workers in the middle of jobs (after the writes, before the completion) and
starts replacements; the killed jobs' leases expire and other workers run them
again. With a transactional task the writes and the completion commit together,
so a killed attempt leaves nothing: the counters end exactly at the number of
jobs and the ledger holds one entry per job. (A killed worker's open transaction
would hold its locks until the server's ``transactionLifetimeLimitSeconds``, 60 s;
the next holder of the job kills that session first, so the run takes seconds.)
The same run with a plain task shows why it matters: each killed attempt's
writes stay, so the counter passes the job count and the ledger has duplicates
(printed, not asserted: how many depends on where the kills land).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from mongoqueue import App

ROOT = Path(__file__).resolve().parents[2]
JOBS = 15
COUNTERS = ("a", "b", "c")
KILLS = 4


@pytest.fixture
def db(client: MongoClient[dict[str, Any]]) -> Iterator[Database[dict[str, Any]]]:
    name = f"chaos_{uuid.uuid4().hex[:12]}"
    yield client[name]
    client.drop_database(name)


class Workers:
    def __init__(self, uri: str, db: Database[Any], queue: str, log_dir: Path) -> None:
        self.env = dict(
            os.environ, CHAOS_URI=uri, CHAOS_DB=db.name, CHAOS_LEASE="1.5", PYTHONUNBUFFERED="1"
        )
        self.queue = queue
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        log = open(self.log_dir / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        command = [
            sys.executable, "-m", "mongoqueue", "worker",
            "tests.reliability.task_chaos_app:app", "--queue", self.queue,
            "--concurrency", "2", "--grace", "5",
        ]  # fmt: skip
        self.procs.append(subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=log))
        log.close()

    @property
    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def stop(self) -> None:
        for proc in self.alive:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_chaos(uri: str, db: Database[Any], tmp_path: Path, transactional: bool) -> dict[str, Any]:
    """Enqueue JOBS, run 3 workers, SIGKILL KILLS of them mid-job; return the figures."""
    producer = App(db)
    queue = "tx" if transactional else "plain"

    @producer.task(name="bump_tx" if transactional else "bump_plain", queue=queue)
    def bump(counter: str) -> None:
        raise AssertionError("runs in the workers")

    for name in ("counters", "ledger"):
        db.create_collection(name)
    handles = [bump.enqueue(COUNTERS[i % len(COUNTERS)]) for i in range(JOBS)]
    rng = random.Random(5)
    workers = Workers(uri, db, queue, tmp_path)
    for _ in range(3):
        workers.start()
    host = socket.gethostname()
    kills = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            done = db[queue].count_documents({"state": "completed"})
            if done == JOBS:
                break
            if kills < KILLS:
                # A worker that holds a job whose ledger entry it already wrote
                # (writes done, completion not yet): kill it there.
                busy = {f"{host}-{entry['pid']}" for entry in db.ledger.find({}, {"pid": 1})}
                held = {
                    doc["locked_by"]
                    for doc in db[queue].find(
                        {"lease_token": {"$type": "string"}}, {"locked_by": 1}
                    )
                }
                targets = [p for p in workers.alive if f"{host}-{p.pid}" in held]
                if not transactional:  # (a transaction's writes are invisible until commit)
                    targets = [p for p in targets if f"{host}-{p.pid}" in busy]
                if targets:
                    time.sleep(rng.uniform(0.05, 0.15))
                    victim = rng.choice(targets)
                    victim.kill()
                    victim.wait()
                    kills += 1
                    workers.start()
                    continue
            time.sleep(0.05)
    finally:
        workers.stop()
    statuses = Counter(h.status().state for h in handles)
    ledger = list(db.ledger.find())
    per_job = Counter(entry["job"] for entry in ledger)
    figures = {
        "kills": kills,
        "statuses": dict(statuses),
        "counters": {d["_id"]: d["n"] for d in db.counters.find()},
        "ledger": len(ledger),
        "duplicates": sum(n - 1 for n in per_job.values() if n > 1),
    }
    print(f"\n{'transactional' if transactional else 'plain'} task under SIGKILL: {figures}")
    return figures


def expected_counters() -> dict[str, int]:
    return dict(Counter(COUNTERS[i % len(COUNTERS)] for i in range(JOBS)))


def test_transactional_tasks_commit_exactly_once_under_sigkill(
    mongodb_uri: str, db: Database[dict[str, Any]], tmp_path: Path
) -> None:
    figures = run_chaos(mongodb_uri, db, tmp_path, transactional=True)
    assert figures["statuses"] == {"completed": JOBS}
    assert figures["kills"] >= 3  # the chaos really happened
    assert figures["counters"] == expected_counters()
    assert figures["ledger"] == JOBS
    assert figures["duplicates"] == 0


def test_plain_tasks_repeat_their_effects_under_sigkill(
    mongodb_uri: str, db: Database[dict[str, Any]], tmp_path: Path
) -> None:
    figures = run_chaos(mongodb_uri, db, tmp_path, transactional=False)
    assert figures["statuses"] == {"completed": JOBS}
    # At least once: nothing lost, and every repeated attempt's effects stayed.
    assert figures["ledger"] == sum(figures["counters"].values())
    for name, count in expected_counters().items():
        assert figures["counters"][name] >= count
    # (figures["duplicates"] is printed: one per kill that landed after the writes.)
