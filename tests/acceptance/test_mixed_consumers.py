"""Several OS processes, sync and async consumers mixed, race over one collection."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from mongoqueue import NO_BACKOFF, MongoQueue
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]

#: (mode, coroutines): two sync processes and two async ones with five coroutines each.
CONSUMERS = [("sync", 1), ("async", 5), ("sync", 1), ("async", 5)]
N_JOBS = 80


def test_sync_and_async_processes_complete_each_job_once(mongodb_uri, collection) -> None:
    control = collection.database[f"{collection.name}_control"]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.acceptance.mixed_consumer",
                mongodb_uri,
                collection.database.name,
                collection.name,
                mode,
                f"{mode}-{k}",
                str(coroutines),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k, (mode, coroutines) in enumerate(CONSUMERS)
    ]
    try:
        wait_for(lambda: control.count_documents({"ready": {"$exists": True}}) == len(procs), 60)
        producer = MongoQueue(collection, "producer", retry=NO_BACKOFF)
        producer.put_many([{"i": i, "fail_first": i % 4 == 0} for i in range(N_JOBS)])
        control.insert_one({"go": True})
        outputs = [proc.communicate(timeout=100) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        collection.database.drop_collection(control.name)
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    records: list[dict[str, Any]] = [
        json.loads(line) for out, _ in outputs for line in out.splitlines() if line
    ]

    completed = Counter(r["i"] for r in records if r["outcome"] == "complete")
    assert completed == Counter(range(N_JOBS))  # every job completed exactly once
    failed_first = Counter(r["i"] for r in records if r["outcome"] == "error")
    assert failed_first == Counter(i for i in range(N_JOBS) if i % 4 == 0)

    holds: dict[int, list[tuple[float, float, str]]] = defaultdict(list)
    for r in records:
        holds[r["i"]].append((r["start"], r["end"], r["consumer"]))
    for i, spans in holds.items():
        spans.sort()
        for (_, end, first), (start, _, second) in itertools.pairwise(spans):
            assert start >= end, f"job {i} held by {first} and {second} at once"
    assert producer.stats()["total"] == 0
