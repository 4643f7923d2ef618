"""Worker throughput: prefetch and batched acknowledgements, before vs after, in one run.

Usage (after ``scripts/setup bench``; the Rust server's bin directory on PATH, as
``scripts/bench`` sets it, or ``MONGODB_URI``)::

    python bench/workers.py [--quick]

Rows, each measured in process against the same server in one run:

* ``Worker`` / ``AsyncWorker``, 1000 no-op jobs at concurrency 1 and 8, and 400
  jobs that each wait 20 ms on I/O (``time.sleep`` / ``asyncio.sleep``) at
  concurrency 32; *before* is ``prefetch=0, batch_acks=False`` (one claim per
  round trip, one ``complete()`` per job: the workers as they were), *after* is
  the default (prefetch and batched acknowledgements).
* Bare pymongo, the same operations with no library code: the old per-job
  loop (``find_one_and_update`` claim + fenced ``delete_one``) and the batched
  one (``find`` ids + ``update_many`` claim + ``find``, then one unordered
  ``bulk_write`` of fenced deletes), single-threaded. It shows what the server
  itself costs.

A job's time is counted from ``run()`` until the observer hears the last job
settled (so the burst exit's last idle wait is not counted). Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from bson import ObjectId
from pymongo import AsyncMongoClient, DeleteOne, MongoClient, ReturnDocument

import mongoqueue
from mongoqueue import AsyncMongoQueue, AsyncWorker, MongoQueue, Worker
from mongoqueue import operations as ops
from mongoqueue.embedded import EmbeddedServer

DATABASE = "mongoqueue_bench_workers"


def fill(collection: Any, count: int) -> None:
    MongoQueue(collection, "producer").put_many([{"n": n} for n in range(count)])


def run_sync(uri: str, jobs: int, concurrency: int, sleep: float, fast: bool) -> float:
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    collection = client[DATABASE][f"w_{ObjectId()}"]
    fill(collection, jobs)
    done = threading.Event()
    seen = [0]
    last = [0.0]
    lock = threading.Lock()

    def observer(job: Any, outcome: str, seconds: float) -> None:
        with lock:
            seen[0] += 1
            last[0] = time.perf_counter()
            if seen[0] >= jobs:
                done.set()

    def handler(job: Any) -> None:
        if sleep:
            time.sleep(sleep)

    options: dict[str, Any] = {} if fast else {"prefetch": 0, "batch_acks": False}
    queue = MongoQueue(collection, "bench", timeout=60)
    worker = Worker(
        queue,
        handler,
        concurrency=concurrency,
        burst=True,
        idle_wait=0.05,
        handle_signals=False,
        observer=observer,
        **options,
    )
    start = time.perf_counter()
    worker.run()
    assert seen[0] == jobs, (seen[0], jobs)
    collection.drop()
    client.close()
    return jobs / (last[0] - start)


def run_async(uri: str, jobs: int, concurrency: int, sleep: float, fast: bool) -> float:

    async def main() -> float:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
        name = f"w_{ObjectId()}"
        sync_client: MongoClient[dict[str, Any]] = MongoClient(uri)
        fill(sync_client[DATABASE][name], jobs)
        seen = [0]
        last = [0.0]

        def observer(job: Any, outcome: str, seconds: float) -> None:
            seen[0] += 1
            last[0] = time.perf_counter()

        async def handler(job: Any) -> None:
            if sleep:
                await asyncio.sleep(sleep)

        options: dict[str, Any] = {} if fast else {"prefetch": 0, "batch_acks": False}
        queue = AsyncMongoQueue(client[DATABASE][name], "bench", timeout=60)
        worker = AsyncWorker(
            queue,
            handler,
            concurrency=concurrency,
            burst=True,
            idle_wait=0.05,
            handle_signals=False,
            observer=observer,
            **options,
        )
        start = time.perf_counter()
        await worker.run()
        assert seen[0] == jobs, (seen[0], jobs)
        sync_client[DATABASE][name].drop()
        sync_client.close()
        await client.close()
        return jobs / (last[0] - start)

    return asyncio.run(main())


def bare_single(uri: str, jobs: int) -> float:
    """The old worker's operations in bare pymongo: one claim and one delete per job."""
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    collection = client[DATABASE][f"b_{ObjectId()}"]
    fill(collection, jobs)
    start = time.perf_counter()
    for _ in range(jobs):
        token = str(ObjectId())
        now = datetime.now(timezone.utc)
        until = now + timedelta(seconds=60)
        doc = collection.find_one_and_update(
            {"state": "ready", "visible_at": {"$lte": now}},
            {"$set": {"lease_token": token, "lease_expires_at": until, "visible_at": until}},
            sort=ops.CLAIM_SORT,
            return_document=ReturnDocument.AFTER,
        )
        assert doc is not None
        collection.delete_one({"_id": doc["_id"], "lease_token": token})
    elapsed = time.perf_counter() - start
    collection.drop()
    client.close()
    return jobs / elapsed


def bare_batched(uri: str, jobs: int, batch: int) -> float:
    """The new worker's operations in bare pymongo: batch claims, one bulk write of acks."""
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    collection = client[DATABASE][f"b_{ObjectId()}"]
    fill(collection, jobs)
    start = time.perf_counter()
    done = 0
    while done < jobs:
        now = datetime.now(timezone.utc)
        until = now + timedelta(seconds=60)
        ids = [
            d["_id"]
            for d in collection.find(
                {"state": "ready", "visible_at": {"$lte": now}},
                {"_id": 1},
                sort=ops.CLAIM_SORT,
                limit=batch,
            )
        ]
        token = str(ObjectId())
        collection.update_many(
            {"_id": {"$in": ids}, "state": "ready", "visible_at": {"$lte": now}},
            {"$set": {"lease_token": token, "lease_expires_at": until, "visible_at": until}},
        )
        won = list(collection.find({"_id": {"$in": ids}, "lease_token": token}))
        collection.bulk_write(
            [DeleteOne({"_id": d["_id"], "lease_token": token}) for d in won], ordered=False
        )
        done += len(won)
    elapsed = time.perf_counter() - start
    collection.drop()
    client.close()
    return jobs / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the jobs")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    noop, io = 1000 // scale, 400 // scale
    server = None
    uri = os.environ.get("MONGODB_URI")
    if not uri:
        server = EmbeddedServer(prefer_rust=True)
        uri = server.start()
    try:
        print(
            f"mongoqueue {mongoqueue.__version__}, Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs, {platform.machine()}, server {uri.split('?')[0]}",
            file=sys.stderr,
        )
        rows: list[tuple[str, float, float]] = []
        workloads = [
            (f"{noop} no-op jobs, concurrency 1", noop, 1, 0.0),
            (f"{noop} no-op jobs, concurrency 8", noop, 8, 0.0),
            (f"{io} jobs of 20 ms I/O, concurrency 32", io, 32, 0.02),
        ]
        for kind, runner in (("Worker", run_sync), ("AsyncWorker", run_async)):
            for label, jobs, concurrency, sleep in workloads:
                before = runner(uri, jobs, concurrency, sleep, False)
                after = runner(uri, jobs, concurrency, sleep, True)
                rows.append((f"{kind}: {label}", before, after))
                print(f"  {rows[-1]}", file=sys.stderr, flush=True)
        single = bare_single(uri, noop)
        batched = bare_batched(uri, noop, 16)
        rows.append((f"bare pymongo: {noop} jobs, no worker", single, batched))
        width = max(len(r[0]) for r in rows)
        print(f"| {'row':<{width}} | before (jobs/s) | after (jobs/s) | after/before |")
        print(f"|{'-' * (width + 2)}|----------------:|---------------:|-------------:|")
        for label, before, after in rows:
            print(
                f"| {label:<{width}} | {before:15,.0f} | {after:14,.0f} | {after / before:11.1f}x |"
            )
        return 0
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    sys.exit(main())
