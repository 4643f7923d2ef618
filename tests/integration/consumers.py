"""Consumer programs that tests run as separate OS processes.

``python -m tests.integration.consumers race URI DB COLLECTION NAME SEED [PARTITIONS]``
    claims jobs until the queue is empty, completing most and releasing some at
    random; prints one JSON line per claim: the job id, the processing window on
    the machine's monotonic clock, and how the hold ended.
``python -m tests.integration.consumers hold URI DB COLLECTION TIMEOUT [PARTITIONS]``
    claims one job, prints its document as JSON, then hangs (to be killed).
"""

from __future__ import annotations

import json
import random
import sys
import time

from bson import json_util
from pymongo import MongoClient

from mongoqueue import NO_BACKOFF, LeaseLost, MongoQueue


def race(uri: str, db: str, coll: str, name: str, seed: str, partitions: str = "1") -> None:
    rng = random.Random(seed)
    client: MongoClient = MongoClient(uri)
    queue = MongoQueue(
        client[db][coll], name, timeout=120, retry=NO_BACKOFF, partitions=int(partitions)
    )
    idle_since = None
    while True:
        job = queue.next()
        if job is None:
            # Others may still release jobs back: stop after a quiet second.
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > 1.0:
                break
            time.sleep(0.02)
            continue
        idle_since = None
        # The processing window, on the machine-wide monotonic clock that every
        # process shares: it starts after the claim returned and ends before the
        # job is let go, so it lies inside the real hold. (Server times cannot
        # order two operations: $$NOW is fixed when an operation starts.)
        record = {"job": str(job.id), "consumer": name, "start": time.monotonic()}
        time.sleep(rng.uniform(0, 0.003))  # "work"
        record["end_at"] = time.monotonic()
        try:
            if rng.random() < 0.2:
                job.release()
                record["end"] = "release"
            else:
                job.complete()
                record["end"] = "complete"
        except LeaseLost as exc:
            record.update(end="lease-lost", error=str(exc))
        print(json.dumps(record), flush=True)
    client.close()


def hold(uri: str, db: str, coll: str, timeout: str, partitions: str = "1") -> None:
    client: MongoClient = MongoClient(uri)
    queue = MongoQueue(
        client[db][coll],
        "doomed",
        timeout=float(timeout),
        retry=NO_BACKOFF,
        partitions=int(partitions),
    )
    job = queue.next()
    print(json_util.dumps(job.data if job else None), flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"race": race, "hold": hold}[command](*args)
