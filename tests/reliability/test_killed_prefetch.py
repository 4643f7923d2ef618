"""Workers SIGKILLed while they hold a prefetch buffer.

Each worker runs one job at a time and keeps three more claimed in its buffer
(``--prefetch 3``). The chaos loop kills a worker only while it is mid-job *and*
holds buffered jobs (seen on the server: held by it, ``prefetched``), so every
kill strands a buffer. The ledger must show nothing lost, no two overlapping
holds of one job, and attempts counted exactly once per failed delivery: the
buffered jobs' expired leases count no attempt, since their handlers never ran.
"""

from __future__ import annotations

import random
import time

from tests.helpers import wait_for
from tests.reliability.tooling import (
    WorkerPool,
    assert_clean,
    check,
    put_jobs,
    report,
    settled,
)

JOBS = 40
WORKERS = 3
KILLS = 6
JOB_SECONDS = 0.5
KILL_WITHIN = 0.15


def test_killed_workers_holding_prefetch_buffers(mongodb_uri, collection, ledger_dir) -> None:
    rng = random.Random(5)
    ids = put_jobs(collection, JOBS, sleep=JOB_SECONDS, seed=5)
    pool = WorkerPool(
        mongodb_uri, collection, ledger_dir, timeout=2.0, extra_args=["--prefetch", "3"]
    )
    started_at = time.monotonic()
    for _ in range(WORKERS):
        pool.start()
    kills = stranded = 0
    deadline = time.monotonic() + 40
    while kills < KILLS and time.monotonic() < deadline and not settled(collection):
        now = time.monotonic()
        starts = pool.open_starts()
        candidates = []
        for proc in pool.alive:
            if now - starts.get(proc.pid, -1e9) >= KILL_WITHIN:
                continue
            consumer = f"worker-{pool.procs.index(proc) + 1}"
            buffered = collection.count_documents({"locked_by": consumer, "prefetched": True})
            if buffered:
                candidates.append((proc, consumer))
        if not candidates:
            time.sleep(0.01)
            continue
        proc, consumer = rng.choice(candidates)
        pool.kill(proc)
        # What the dead worker still held in its buffer (its leases now run out).
        stranded += collection.count_documents(
            {"locked_by": consumer, "prefetched": True, "lease_token": {"$type": "string"}}
        )
        kills += 1
        pool.start()
    wait_for(lambda: settled(collection), timeout=120, interval=0.1)
    codes = pool.stop()
    assert all(code == 0 for code in codes), (codes, pool.logs())
    figures = check(
        "killed prefetching workers",
        pool,
        ids,
        {"SIGKILL holding a buffer": kills},
        started_at,
        exact_attempts=True,
    )
    report(figures)
    assert_clean(figures, pool)
    assert kills >= 3, kills  # the chaos really happened
    assert stranded >= 3, stranded  # and it stranded buffered jobs
    assert figures.extra_attempts == 0
