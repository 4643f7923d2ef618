"""Contention rows: consumer processes on an unpartitioned queue (P = 1) vs P = 16.

Each run fills a queue of ``jobs`` jobs through ``MongoQueue(partitions=P)`` and
starts 1, 2, 4 and 8 consumer processes that claim and complete until it is empty.
Per process, a CommandListener counts the claims sent (``findAndModify``) and the
probes (``find`` over several partitions); a claim that comes back empty while jobs
remain is a lost race (the head another consumer took) or, partitioned, an
empty partition before a probe. The server's own
``metrics.operation.writeConflicts`` (serverStatus) is read before and after, where
the server reports it. Not a test: nothing here asserts.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any

from measure import Row, rate
from pymongo import MongoClient, monitoring

from mongoqueue import MongoQueue

SPAWN = multiprocessing.get_context("spawn")
PARTITIONS = (1, 16)
CONSUMERS = (1, 2, 4, 8)


class _Count(monitoring.CommandListener):
    def __init__(self) -> None:
        self.claims = 0
        self.finds = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "findAndModify":
            self.claims += 1
        elif event.command_name == "find":
            self.finds += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def drain(
    uri: str, database: str, collection: str, partitions: int, start: Any, results: Any
) -> None:
    """Claim and complete until a claim finds nothing; report the jobs and commands."""
    count = _Count()
    client: MongoClient[dict[str, Any]] = MongoClient(uri, event_listeners=[count])
    queue = MongoQueue(
        client[database][collection], f"bench-{os.getpid()}", timeout=300, partitions=partitions
    )
    queue.ensure_indexes()
    seen: list[int] = []
    start.wait()
    claims_before, finds_before = count.claims, count.finds
    # Jobs are only completed here (never released), so an empty claim means every
    # job left is done or held by another consumer: this one is finished.
    while (job := queue.next()) is not None:
        seen.append(job.payload["n"])
        job.complete()
    results.put((seen, count.claims - claims_before, count.finds - finds_before))
    client.close()


def _write_conflicts(db: Any) -> int | None:
    try:
        status = db.client.admin.command("serverStatus")
    except Exception:
        return None
    value = status.get("metrics", {}).get("operation", {}).get("writeConflicts")
    return int(value) if value is not None else None


def contention(b: Any) -> list[Row]:
    jobs = max(400, b.sizes.process_jobs or 400)
    rows: list[Row] = []
    base: dict[int, float] = {}
    for consumers in CONSUMERS:
        for partitions in PARTITIONS:
            b.log(f"{consumers} consumer process(es), P={partitions}: draining {jobs:,} jobs")
            c = b.collection(f"contention_p{partitions}_{consumers}")
            producer = MongoQueue(c, "bench-producer", partitions=partitions)
            producer.put_many([{"n": n} for n in range(jobs)])
            conflicts_before = _write_conflicts(b.database)
            start = SPAWN.Barrier(consumers + 1)
            results = SPAWN.Queue()
            procs = [
                SPAWN.Process(
                    target=drain,
                    args=(b.uri, b.database_name, c.name, partitions, start, results),
                )
                for _ in range(consumers)
            ]
            for p in procs:
                p.start()
            start.wait(timeout=120)
            began = time.perf_counter()
            outcomes = [results.get(timeout=600) for _ in procs]
            elapsed = time.perf_counter() - began
            for p in procs:
                p.join(timeout=60)
            conflicts_after = _write_conflicts(b.database)
            seen = [n for out in outcomes for n in out[0]]
            claims = sum(out[1] for out in outcomes)
            finds = sum(out[2] for out in outcomes)
            duplicates = len(seen) - len(set(seen))
            lost = jobs - len(set(seen))
            throughput = len(seen) / max(elapsed, 1e-9)
            if consumers == 1:
                base[partitions] = throughput
            conflicts = (
                "n/a (server does not report)"
                if conflicts_before is None or conflicts_after is None
                else str(conflicts_after - conflicts_before)
            )
            # Each consumer's last claim finds the queue empty: not a lost race.
            wasted = claims - len(seen) - consumers
            b.drop(c)
            c.database["mongoqueue_meta"].delete_one({"_id": c.name})
            rows.append(
                Row(
                    f"{consumers} consumer process(es), P={partitions}: claim+complete jobs/s",
                    rate(throughput),
                    f"P={partitions}, 1 consumer {rate(base[partitions])}",
                    throughput / base[partitions],
                    "duplicates = 0, lost = 0",
                    duplicates == 0 and lost == 0,
                    [
                        f"P={partitions}, {consumers} process(es): {claims} claims sent for "
                        f"{len(seen)} jobs ({wasted} lost races or empty partitions, "
                        f"{wasted / max(len(seen), 1):.2f} per job), {finds} finds (probes, "
                        f"batch reads), server writeConflicts {conflicts}; "
                        f"{duplicates} duplicates, {lost} lost"
                    ],
                )
            )
    return rows
