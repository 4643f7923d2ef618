"""Lock holders that tests run as separate OS processes.

``python -m tests.integration.lockers race URI DB COLLECTION NAME ROUNDS LEASE SEED``
    acquires the lock ``race`` ROUNDS times (waiting for it), holds it a few
    milliseconds, releases it; prints one JSON line per hold: its window on the
    machine-wide monotonic clock (``start`` after acquire returned, ``end``
    before release was sent) and ``bound``, the end of the lease as the handle
    counts it (``locked`` is True until then).
``python -m tests.integration.lockers hold URI DB COLLECTION NAME LEASE``
    acquires the lock ``race`` (waiting for it), prints ``{start, bound}``, then
    hangs holding it (to be SIGKILLed).
``python -m tests.integration.lockers try URI DB COLLECTION NAME LEASE``
    one ``acquire(wait=False)`` of the lock ``skew``; prints ``{acquired, ttl,
    acquired_at}`` (the stored lease, as ISO dates) and releases nothing.

With ``MONGOQUEUE_TEST_SKEW`` set, the process's wall clock is shifted by that
many seconds first (``tests.reliability.skewed``); the lock must not care.
"""

from __future__ import annotations

import os

if os.environ.get("MONGOQUEUE_TEST_SKEW"):
    import tests.reliability.skewed  # noqa: F401  (shifts time.time and datetime.now)

import json
import random
import sys
import time
from typing import Any

from pymongo import MongoClient

from mongoqueue import MongoLock


def _say(**record: Any) -> None:
    print(json.dumps(record), flush=True)


def race(uri: str, db: str, coll: str, name: str, rounds: str, lease: str, seed: str) -> None:
    rng = random.Random(seed)
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    handle = MongoLock(client[db][coll], "race", lease=float(lease))
    for _ in range(int(rounds)):
        if not handle.acquire(wait=120, poll_period=0.02):
            _say(name=name, error="not acquired within 120 s")
            sys.exit(1)
        start = time.monotonic()
        bound = start + handle.remaining
        time.sleep(rng.uniform(0, 0.01))  # "work"
        end = time.monotonic()
        _say(name=name, start=start, end=end, bound=bound, locked=handle.locked)
        handle.release()
        time.sleep(rng.uniform(0, 0.01))
    client.close()


def hold(uri: str, db: str, coll: str, name: str, lease: str) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    handle = MongoLock(client[db][coll], "race", lease=float(lease))
    if not handle.acquire(wait=120, poll_period=0.02):
        _say(name=name, error="not acquired within 120 s")
        sys.exit(1)
    start = time.monotonic()
    _say(name=name, start=start, bound=start + handle.remaining)
    while True:
        time.sleep(60)


def try_once(uri: str, db: str, coll: str, name: str, lease: str) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    handle = MongoLock(client[db][coll], "skew", lease=float(lease))
    acquired = handle.acquire(wait=False)
    doc = client[db][coll].find_one({"_id": "skew"}) or {}
    _say(
        name=name,
        acquired=acquired,
        client_id=handle.client_id,
        ttl=doc["ttl"].isoformat() if "ttl" in doc else None,
        acquired_at=doc["acquired_at"].isoformat() if "acquired_at" in doc else None,
    )
    client.close()


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"race": race, "hold": hold, "try": try_once}[command](*args)
