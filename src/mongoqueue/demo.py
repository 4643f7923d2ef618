"""A short demo on the embedded server: ``python -m mongoqueue.demo``.

Puts jobs, runs a few consumer processes over them, and prints the counts:
every job completed exactly once. Needs the ``embedded`` extra (no MongoDB).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from collections import Counter
from typing import Any

from pymongo import MongoClient

from . import MongoQueue
from .embedded import EmbeddedServer


def _consume(uri: str, name: str) -> list[int]:
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    queue = MongoQueue(client.demo.jobs, consumer_id=name, timeout=30)
    done = []
    while (job := queue.next()) is not None:
        with job as data:
            done.append(int(data["payload"]["n"]))
    client.close()
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=60, help="jobs to put (default 60)")
    parser.add_argument("--consumers", type=int, default=3, help="consumer processes (default 3)")
    parser.add_argument("--uri", default=os.environ.get("MONGODB_URI"), help="use this MongoDB")
    args = parser.parse_args(argv)

    server = None if args.uri else EmbeddedServer(prefer_rust=True)
    uri = args.uri or server.start()  # type: ignore[union-attr]
    try:
        print(f"server: {'embedded ' + server.kind if server else uri}")
        client: MongoClient[dict[str, Any]] = MongoClient(uri)
        queue = MongoQueue(client.demo.jobs, consumer_id="producer")
        queue.clear()
        queue.put_many([{"n": n} for n in range(args.jobs)])
        print(f"put {args.jobs} jobs: {queue.stats()}")
        start = time.monotonic()
        ctx = multiprocessing.get_context("spawn")
        names = [f"consumer-{i + 1}" for i in range(args.consumers)]
        with ctx.Pool(args.consumers) as pool:
            results = pool.starmap(_consume, [(uri, name) for name in names])
        elapsed = time.monotonic() - start
        for name, done in zip(names, results, strict=True):
            print(f"{name} completed {len(done)} jobs")
        counts = Counter(n for done in results for n in done)
        once = sum(1 for n in range(args.jobs) if counts[n] == 1)
        print(f"{once} of {args.jobs} jobs completed exactly once in {elapsed:.1f}s")
        print(f"stats: {queue.stats()}")
        client.close()
        return 0 if once == args.jobs else 1
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    raise SystemExit(main())
