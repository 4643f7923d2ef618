"""Worker processes, the interval ledger and its checks, shared by the scenarios.

Every scenario puts N jobs (a few of them fail by policy), runs ``mongoqueue
worker tests.reliability.handlers:ledger`` processes against them while a fault
is injected, waits until every job is completed or failed, then checks the
ledger the handlers wrote (see :mod:`tests.reliability.handlers`):

* **lost**: a job neither completed (gone, after a delivery whose handler
  returned) nor failed by policy;
* **overlaps**: two deliveries of one job whose processing windows overlap on the
  machine-wide monotonic clock (a killed process's window ends when it was
  reaped);
* **attempt errors**: a delivery whose ``attempts`` does not grow by at least one
  after each delivery that did not complete the job (a failure not counted), or,
  where ``exact`` (no network fault, so every claim reply arrives), by more than
  one (a failure counted twice); a failed job whose ``attempts`` differs from its
  deliveries.

Attempts beyond the deliveries seen (``extra_attempts``) come from claims whose
reply was lost in a cut: the server leased the job to a consumer that never
heard of it, and the lease expiry counted as a failure (at-least-once).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo.collection import Collection

from mongoqueue import NO_BACKOFF, MongoQueue

ROOT = Path(__file__).resolve().parents[2]
HANDLER = "tests.reliability.handlers:ledger"


@dataclass
class Scale:
    jobs: int
    workers: int
    faults: int
    seconds: float  # bound of the fault loop


@dataclass
class Figures:
    """The measured result of one scenario run (what RELIABILITY.md reports)."""

    scenario: str
    jobs: int
    workers_started: int
    faults: dict[str, int]
    deliveries: int
    completed: int
    failed_by_policy: int  # the jobs that always raise, and any that ran out of attempts
    failed_by_faults: int  # of those, jobs that would have completed but for the faults
    lost: int
    overlaps: int
    attempt_errors: int
    extra_attempts: int
    seconds: float
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return json.dumps({k: v for k, v in self.__dict__.items() if k != "problems"})


def put_jobs(collection: Collection[Any], jobs: int, *, sleep: float, seed: int) -> dict[str, int]:
    """Put ``jobs`` jobs, one in ten failing by policy; returns {job id: n}."""
    rng = random.Random(seed)
    producer = MongoQueue(collection, "producer", retry=NO_BACKOFF)
    payloads = [
        {"n": n, "sleep": round(rng.uniform(sleep / 2, sleep), 3), "fail": n % 10 == 3}
        for n in range(jobs)
    ]
    return {str(i): n for i, n in zip(producer.put_many(payloads), range(jobs), strict=True)}


class WorkerPool:
    """``mongoqueue worker`` processes writing to one ledger directory."""

    def __init__(
        self,
        uri: str,
        collection: Collection[Any],
        ledger_dir: Path,
        *,
        timeout: float,
        max_attempts: int = 3,
        concurrency: int = 1,
        server_timeout: float = 2.0,
        extra_env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.uri = uri
        self.collection = collection
        self.ledger_dir = ledger_dir
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.concurrency = concurrency
        self.server_timeout = server_timeout
        self.extra_env = extra_env or {}
        self.extra_args = extra_args or []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.killed: dict[int, float] = {}  # pid -> monotonic time it was reaped
        self.started = 0

    def start(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
        env.update(
            PYTHONPATH=str(ROOT),
            RELIABILITY_LEDGER_DIR=str(self.ledger_dir),
            PYTHONUNBUFFERED="1",
            **self.extra_env,
        )
        self.started += 1
        log = open(self.ledger_dir / f"worker-{self.started}.log", "wb")  # noqa: SIM115
        command = [
            sys.executable, "-m", "mongoqueue", "--uri", self.uri,
            "--db", self.collection.database.name, "--collection", self.collection.name,
            "--server-timeout", str(self.server_timeout),
            "worker", HANDLER, "--concurrency", str(self.concurrency),
            "--timeout", str(self.timeout), "--max-attempts", str(self.max_attempts),
            "--retry-initial", "0.05", "--retry-max", "0.2", "--grace", "10",
            "--consumer-id", f"worker-{self.started}", "--log-level", "WARNING",
            *self.extra_args,
        ]  # fmt: skip
        with log:
            proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    @property
    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        self.killed[proc.pid] = time.monotonic()  # no window of it lasts past this

    def stop(self) -> list[int]:
        """SIGTERM every live worker and wait; returns their exit codes."""
        for proc in self.alive:
            proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.pid not in self.killed:
                codes.append(proc.returncode)
        return codes

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.ledger_dir.glob("worker-*.log"))
        )

    def records(self) -> list[dict[str, Any]]:
        records = []
        for path in self.ledger_dir.glob("*.jsonl"):
            records += [json.loads(line) for line in path.read_text().splitlines() if line]
        return records

    def open_starts(self) -> dict[int, float]:
        """pid -> start time of the job each live worker is running now (per its ledger)."""
        result = {}
        for proc in self.alive:
            path = self.ledger_dir / f"{proc.pid}.jsonl"
            if not path.exists():
                continue
            lines = path.read_text().splitlines()
            if lines:
                last = json.loads(lines[-1])
                if last["ev"] == "start":
                    result[proc.pid] = last["t"]
        return result


def settled(collection: Collection[Any]) -> bool:
    """True once no job is waiting, delayed or running (all completed or failed)."""
    return collection.count_documents({"state": {"$ne": "failed"}}) == 0


def deliveries_of(pool: WorkerPool) -> dict[str, list[dict[str, Any]]]:
    """Each job's deliveries: start, end (or the kill time), outcome, attempts."""
    starts: dict[tuple[int, str, int], dict[str, Any]] = {}
    by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in sorted(pool.records(), key=lambda r: r["t"]):
        key = (record["pid"], record["job"], record["attempts"])
        if record["ev"] == "start":
            starts[key] = {**record, "end": None, "outcome": None}
            by_job[record["job"]].append(starts[key])
        else:
            starts[key].update(end=record["t"], outcome=record["outcome"])
    for holds in by_job.values():
        for hold in holds:
            if hold["end"] is None:
                reaped = pool.killed.get(hold["pid"])
                hold["end"] = reaped if reaped is not None else float("inf")
                hold["outcome"] = "killed" if reaped is not None else "unfinished"
        holds.sort(key=lambda h: h["t"])
    return by_job


def check(
    scenario: str,
    pool: WorkerPool,
    ids: dict[str, int],
    faults: dict[str, int],
    started_at: float,
    *,
    exact_attempts: bool,
) -> Figures:
    collection = pool.collection
    by_job = deliveries_of(pool)
    remaining = {str(doc["_id"]): doc for doc in collection.find({})}
    problems: list[str] = []
    lost = overlaps = attempt_errors = extra = completed = failed = by_faults = 0
    for job_id, n in ids.items():
        holds = by_job.get(job_id, [])
        doc = remaining.get(job_id)
        if doc is None:
            if not any(h["outcome"] == "returned" for h in holds):
                lost += 1
                problems.append(f"job {n} is gone but no handler ever returned: {holds}")
                continue
            completed += 1
        elif doc.get("state") == "failed":
            failed += 1
            by_faults += not doc["payload"].get("fail")
            after_last = doc["attempts"] - (holds[-1]["attempts"] + 1 if holds else 0)
            if after_last < 0 or (exact_attempts and after_last != 0):
                attempt_errors += 1
                problems.append(f"failed job {n}: attempts {doc['attempts']}, holds {holds}")
            extra += max(0, after_last)
        else:
            lost += 1
            problems.append(f"job {n} is still in the queue: {doc}")
            continue
        if holds and holds[0]["attempts"] != 0 and exact_attempts:
            attempt_errors += 1
            problems.append(f"job {n}: first delivery had attempts {holds[0]['attempts']}")
        if holds:
            extra += holds[0]["attempts"]
        for earlier, later in pairwise(holds):
            if later["t"] < earlier["end"]:
                overlaps += 1
                problems.append(f"job {n}: overlapping holds {earlier} and {later}")
            step = later["attempts"] - earlier["attempts"]
            if step < 1 or (exact_attempts and step != 1):
                attempt_errors += 1
                problems.append(f"job {n}: attempts went {earlier} -> {later}")
            extra += max(0, step - 1)
        returned = [i for i, h in enumerate(holds) if h["outcome"] == "returned"]
        if exact_attempts and doc is None and returned != [len(holds) - 1]:
            # Nothing cuts a reply here, so a handler that returned completed its job.
            attempt_errors += 1
            problems.append(f"job {n}: delivered again after it completed: {holds}")
    unknown = set(by_job) - set(ids)
    if unknown:
        problems.append(f"deliveries of jobs nobody put: {sorted(unknown)}")
        lost += len(unknown)
    return Figures(
        scenario=scenario,
        jobs=len(ids),
        workers_started=pool.started,
        faults=faults,
        deliveries=sum(len(h) for h in by_job.values()),
        completed=completed,
        failed_by_policy=failed,
        failed_by_faults=by_faults,
        lost=lost,
        overlaps=overlaps,
        attempt_errors=attempt_errors,
        extra_attempts=extra,
        seconds=round(time.monotonic() - started_at, 1),
        problems=problems,
    )


def report(figures: Figures) -> None:
    """Print the figures, and append them to ``$RELIABILITY_FIGURES`` when set."""
    print(figures.line())
    target = os.environ.get("RELIABILITY_FIGURES")
    if target:
        with open(target, "a") as out:
            out.write(figures.line() + "\n")


def assert_clean(figures: Figures, pool: WorkerPool) -> None:
    report(figures)
    assert (figures.lost, figures.overlaps, figures.attempt_errors) == (0, 0, 0), (
        "\n".join(figures.problems[:20]) + "\n" + pool.logs()
    )
    assert figures.completed + figures.failed_by_policy == figures.jobs
    expected_failed = sum(1 for n in range(figures.jobs) if n % 10 == 3)
    # Jobs that fail on purpose end failed; others may fail only by too many faults.
    assert figures.failed_by_policy >= expected_failed


def object_ids(ids: dict[str, int]) -> list[ObjectId]:
    return [ObjectId(i) for i in ids]
