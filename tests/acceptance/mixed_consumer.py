"""A consumer process for the mixed sync/async race (see test_mixed_consumers.py).

    python -m tests.acceptance.mixed_consumer URI DB COLLECTION sync|async NAME COROUTINES

Signals it is ready, waits for the go signal, then consumes until the queue is
empty. A job whose payload has ``fail_first`` fails its first attempt. Prints
one JSON line per delivery: job number, consumer, outcome, and the hold as
``time.monotonic()`` readings (system-wide on Linux, so comparable between
processes): ``start`` after the claim returned, ``end`` before the complete or
error was sent.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

from pymongo import AsyncMongoClient, MongoClient

from mongoqueue import NO_BACKOFF, AsyncMongoQueue, MongoQueue

EMPTY_WAIT = 0.5


def _record(records: list[dict[str, Any]], job: Any, consumer: str, start: float) -> str:
    outcome = "error" if job.payload["fail_first"] and job.attempts == 0 else "complete"
    records.append(
        {
            "i": job.payload["i"],
            "consumer": consumer,
            "outcome": outcome,
            "start": start,
            "end": time.monotonic(),
        }
    )
    return outcome


def _signal_ready_and_wait(client: MongoClient[dict[str, Any]], db: str, coll: str, name: str):
    control = client[db][f"{coll}_control"]
    control.insert_one({"ready": name})
    deadline = time.monotonic() + 60
    while control.find_one({"go": True}) is None:
        if time.monotonic() > deadline:
            raise SystemExit("no go signal within 60 s")
        time.sleep(0.02)


def run_sync(uri: str, db: str, coll: str, name: str) -> list[dict[str, Any]]:
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    records: list[dict[str, Any]] = []
    rng = random.Random(name)
    try:
        _signal_ready_and_wait(client, db, coll, name)
        queue = MongoQueue(client[db][coll], name, timeout=30, retry=NO_BACKOFF)
        while True:
            job = queue.next(wait=EMPTY_WAIT)
            if job is None:
                if queue.size() == 0:
                    return records
                continue
            start = time.monotonic()
            time.sleep(rng.random() * 0.005)
            if _record(records, job, name, start) == "error":
                job.error("first attempt fails")
            else:
                job.complete()
    finally:
        client.close()


async def run_async(uri: str, db: str, coll: str, name: str, coroutines: int):
    sync_client: MongoClient[dict[str, Any]] = MongoClient(uri)
    try:
        _signal_ready_and_wait(sync_client, db, coll, name)
    finally:
        sync_client.close()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    records: list[dict[str, Any]] = []
    queue = AsyncMongoQueue(client[db][coll], name, timeout=30, retry=NO_BACKOFF)

    async def consume(k: int) -> None:
        rng = random.Random(f"{name}-{k}")
        while True:
            job = await queue.next(wait=EMPTY_WAIT)
            if job is None:
                if await queue.size() == 0:
                    return
                continue
            start = time.monotonic()
            await asyncio.sleep(rng.random() * 0.005)
            if _record(records, job, f"{name}/{k}", start) == "error":
                await job.error("first attempt fails")
            else:
                await job.complete()

    try:
        await asyncio.gather(*(consume(k) for k in range(coroutines)))
    finally:
        await client.close()
    return records


def main() -> None:
    uri, db, coll, mode, name, coroutines = sys.argv[1:7]
    if mode == "sync":
        records = run_sync(uri, db, coll, name)
    else:
        records = asyncio.run(run_async(uri, db, coll, name, int(coroutines)))
    for record in records:
        print(json.dumps(record))


if __name__ == "__main__":
    main()
