"""``mongoqueue demo``: workers, a crash, and the proof that nothing was lost.

Starts the embedded server (extra ``embedded``) unless given a URI, puts N jobs,
runs K ``mongoqueue worker`` processes over them with a live display, kills one
worker with SIGKILL while it is running a job, and checks at the end that every
job was completed exactly once and that the killed worker's job(s) came back
when their lease expired and were completed by another worker.

The demo's handler (:func:`handle`) writes a ``started`` event before its work
and a ``completed`` event after ``job.complete()`` succeeded, in the
``events`` collection next to the queue; the check reads those events.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.database import Database
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .embedded import EmbeddedServer
from .job import Job
from .queue import MongoQueue

__all__ = ["handle", "run_demo"]

DEMO_DB = "mongoqueue_demo"
JOBS = "jobs"
EVENTS = "events"
#: Kill a worker at most this long after its job started (jobs sleep 0.2 s or more).
KILL_WINDOW = 0.1
#: Give up (and say so) if the workers have not finished by then (seconds).
DEADLINE_SECONDS = 300.0


def handle(job: Job) -> None:
    """The demo's handler: sleeps for ``payload["seconds"]``, recording start and completion."""
    events = job.queue.collection.database[EVENTS]
    n, worker = job.payload["n"], job.queue.consumer_id
    events.insert_one(
        {"n": n, "event": "started", "worker": worker, "attempts": job.attempts, "at": time.time()}
    )
    time.sleep(job.payload["seconds"])
    job.complete()
    events.insert_one({"n": n, "event": "completed", "worker": worker})


@dataclass
class _Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    killed: bool = False
    stopped: bool = False

    @property
    def status(self) -> str:
        code = self.process.poll()
        if self.killed:
            return "[red]killed (SIGKILL)[/]"
        return "[green]running[/]" if code is None else f"exited ({code})"


@dataclass
class _Demo:
    uri: str
    jobs: int
    workers: int
    lease: float
    console: Console
    logs: Path
    pool: list[_Worker] = field(default_factory=list)
    crashed: list[int] = field(default_factory=list)

    def run(self) -> int:
        client: MongoClient[dict[str, Any]] = MongoClient(self.uri)
        try:
            db = client[DEMO_DB]
            queue = MongoQueue(db[JOBS], "demo-producer", timeout=self.lease)
            queue.clear()
            db[EVENTS].delete_many({})
            rng = random.Random()
            queue.put_many([{"n": n, "seconds": rng.uniform(0.2, 0.6)} for n in range(self.jobs)])
            self.console.print(
                f"put {self.jobs} jobs; starting {self.workers} workers (lease {self.lease}s)"
            )
            self._spawn()
            finished = self._watch(db)
            return self._report(db, queue, finished)
        finally:
            for worker in self.pool:
                if worker.process.poll() is None:
                    worker.process.kill()
                    worker.process.wait()
            client.close()

    def _spawn(self) -> None:
        for i in range(1, self.workers + 1):
            name = f"worker-{i}"
            log = self.logs / f"{name}.log"
            command = [
                sys.executable, "-m", "mongoqueue", "--uri", self.uri, "--db", DEMO_DB,
                "--collection", JOBS, "worker", f"{__name__}:handle", "--concurrency", "1",
                "--timeout", str(self.lease), "--retry-initial", "0.2", "--retry-max", "1",
                "--consumer-id", name, "--log-level", "INFO",
            ]  # fmt: skip
            with open(log, "wb") as out:
                process = subprocess.Popen(
                    command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            self.pool.append(_Worker(name, process, log))

    def _counts(self, db: Database[dict[str, Any]]) -> Counter[tuple[str, str]]:
        pipeline = [{"$group": {"_id": {"w": "$worker", "e": "$event"}, "n": {"$sum": 1}}}]
        return Counter(
            {(row["_id"]["w"], row["_id"]["e"]): row["n"] for row in db[EVENTS].aggregate(pipeline)}
        )

    def _table(self, counts: Counter[tuple[str, str]]) -> Table:
        table = Table(title="workers")
        for column in ("worker", "pid", "status", "started", "completed"):
            table.add_column(column)
        for worker in self.pool:
            table.add_row(
                worker.name,
                str(worker.process.pid),
                worker.status,
                str(counts[worker.name, "started"]),
                str(counts[worker.name, "completed"]),
            )
        return table

    def _maybe_kill(self, db: Database[dict[str, Any]], completed: int) -> None:
        """Once a fifth of the jobs are done, SIGKILL a worker that has just started a job.

        A worker runs one job at a time; killing it within ``KILL_WINDOW`` seconds of
        its job's start (the job sleeps longer than that) kills it mid-job, never
        between ``complete()`` and its record. The crashed job is read back after
        the kill: the one still held by the dead worker.
        """
        if self.crashed or completed < self.jobs // 5:
            return
        now = time.time()
        for worker in self.pool:
            if worker.process.poll() is not None:
                continue
            held = db[JOBS].find_one(
                {"locked_by": worker.name, "lease_token": {"$type": "string"}}, {"payload.n": 1}
            )
            if held is None:
                continue
            start = db[EVENTS].find_one(
                {"worker": worker.name, "event": "started", "n": held["payload"]["n"]},
                sort=[("_id", -1)],
            )
            if start is None or now - start["at"] > KILL_WINDOW:
                continue
            worker.process.send_signal(signal.SIGKILL)
            worker.process.wait()
            worker.killed = True
            still_held = db[JOBS].find(
                {"locked_by": worker.name, "lease_token": {"$type": "string"}}
            )
            self.crashed = sorted(doc["payload"]["n"] for doc in still_held) or [-1]
            return

    def _watch(self, db: Database[dict[str, Any]]) -> bool:
        progress = Progress(
            TextColumn("jobs completed"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.console,
        )  # fmt: skip
        task = progress.add_task("jobs", total=self.jobs)
        deadline = time.monotonic() + DEADLINE_SECONDS
        counts = self._counts(db)
        with Live(Group(progress, self._table(counts)), console=self.console,
                  refresh_per_second=8) as live:  # fmt: skip
            while time.monotonic() < deadline:
                counts = self._counts(db)
                completed = sum(v for (_, event), v in counts.items() if event == "completed")
                self._maybe_kill(db, completed)
                progress.update(task, completed=completed)
                live.update(Group(progress, self._table(counts)))
                if all(worker.process.poll() is not None for worker in self.pool):
                    return True
                # Not --burst: a surviving worker would exit while a killed worker's job
                # waits for its lease to end. Stop them once every job has left the queue.
                if db[JOBS].count_documents({}, limit=1) == 0:
                    self._stop_workers()
                time.sleep(0.05)
        return False

    def _stop_workers(self) -> None:
        for worker in self.pool:
            if worker.process.poll() is None and not worker.stopped:
                worker.stopped = True
                worker.process.send_signal(signal.SIGTERM)

    def _report(self, db: Database[dict[str, Any]], queue: MongoQueue, finished: bool) -> int:
        completions = Counter(e["n"] for e in db[EVENTS].find({"event": "completed"}))
        once = sum(1 for n in range(self.jobs) if completions[n] == 1)
        twice = sum(1 for n in range(self.jobs) if completions[n] > 1)
        left = queue.stats()["total"]
        problems = []
        if not finished:
            problems.append(f"the workers did not finish within {DEADLINE_SECONDS:.0f}s")
        if once != self.jobs:
            problems.append(f"{self.jobs - once} jobs were not completed exactly once")
        if left:
            problems.append(f"{left} jobs are still in the queue")
        for worker in self.pool:
            if not worker.killed and worker.process.returncode != 0:
                problems.append(f"{worker.name} exited with code {worker.process.returncode}")

        self.console.print()
        table = Table(title="result")
        table.add_column("check")
        table.add_column("result")
        table.add_row("jobs put", str(self.jobs))
        table.add_row("completed exactly once", f"{once} of {self.jobs}")
        table.add_row("completed more than once", str(twice))
        table.add_row("left in the queue", str(left))
        if not self.crashed:
            problems.append("no worker was caught mid-job, so nothing was killed")
        if self.crashed == [-1]:
            problems.append("the killed worker finished its job just before the kill")
        for n in [n for n in self.crashed if n >= 0]:
            starts = list(db[EVENTS].find({"n": n, "event": "started"}).sort("_id", 1))
            done = db[EVENTS].find_one({"n": n, "event": "completed"})
            victim = starts[0]["worker"] if starts else "?"
            retried = len(starts) >= 2 and starts[-1]["attempts"] >= 1
            by = done["worker"] if done else "nobody"
            if not retried or by == victim:
                problems.append(f"job {n} of the killed worker was not retried by another worker")
            table.add_row(
                f"job {n} (its worker was killed)",
                f"delivered {len(starts)} times; attempts at the last delivery: "
                f"{starts[-1]['attempts'] if starts else '?'}; completed by {by}",
            )
        self.console.print(table)
        if problems:
            for problem in problems:
                self.console.print(f"[red]FAILED:[/] {problem}")
            for worker in self.pool:
                tail = worker.log.read_text(errors="replace").splitlines()[-5:]
                self.console.print(f"{worker.name} log ends:", *tail, sep="\n  ", markup=False)
            return 1
        self.console.print(
            f"[green]OK:[/] all {self.jobs} jobs completed exactly once; the job of the "
            "killed worker came back when its lease expired and was completed by another."
        )
        return 0


def run_demo(
    *,
    jobs: int = 30,
    workers: int = 3,
    uri: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    lease: float = 2.0,
    console: Console | None = None,
) -> int:
    """Run the demo; returns 0 when every check passed, else 1."""
    console = console or Console()
    server = None
    if uri is None:
        server = EmbeddedServer(data_dir, prefer_rust=True)
        with console.status("starting the embedded server"):
            uri = server.start()
        console.print(f"embedded {server.kind} server at {uri}, data in {server.data_dir}")
    else:
        console.print(f"using the MongoDB at the given URI (database {DEMO_DB})")
    try:
        with tempfile.TemporaryDirectory(prefix="mongoqueue-demo-") as logs:
            return _Demo(uri, jobs, workers, lease, console, Path(logs)).run()
    finally:
        if server is not None:
            server.close()
