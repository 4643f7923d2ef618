"""The dashboard's job lists on a large queue: ``explain`` of the exact finds it sends.

Fills a queue with N jobs (default 1,000,000; ``--jobs``), holds some and fails
some, then replays the dashboard's list queries (``mongoqueue.dashboard.queries``)
for the first page and for a deep page (a keyset cursor near the end), and prints
the plan, keys and documents examined, and the time of each, side by side with
the ``skip()`` a page-number list would send for the same deep page.

Run: ``.venv/bin/python -m bench.dashboard_lists --uri mongodb://... [--jobs N]``
(without ``--uri``, an embedded server is started).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import pymongo
from pymongo import monitoring

from bench.measure import explain, fill, queue
from mongoqueue.dashboard import queries
from mongoqueue.embedded import EmbeddedServer

PAGE = 25
#: Fields of a sent command that belong to the session or the connection, not the query.
ENVELOPE = {"$db", "lsid", "$clusterTime", "$readPreference", "txnNumber", "signature"}


class Capture(monitoring.CommandListener):
    """Keeps the ``find`` commands the client sent since the last ``clear()``."""

    def __init__(self) -> None:
        self.finds: list[dict[str, Any]] = []

    def clear(self) -> None:
        self.finds = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.finds.append({k: v for k, v in event.command.items() if k not in ENVELOPE})

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def row(label: str, database: Any, commands: list[dict[str, Any]], ms: float) -> None:
    plans = [explain(database, [("find", command)]) for command in commands]
    shapes = "; ".join(f"{' <- '.join(p.stages)} on {p.index or '-'}" for p in plans)
    keys = sum(p.keys_examined or 0 for p in plans)
    docs = sum(p.docs_examined or 0 for p in plans)
    print(f"| {label} | {len(plans)} | {shapes} | {keys} | {docs} | {ms:.1f} ms |")


def listed(
    label: str, database: Any, capture: Capture, q: Any, filters: Any, after: str | None = None
) -> queries.Page:
    """Run the dashboard's own list query, then explain the exact find it sent."""
    capture.clear()
    started = time.perf_counter()
    page = queries.list_jobs(q, filters, after=after, limit=PAGE)
    ms = (time.perf_counter() - started) * 1000
    row(label, database, capture.finds, ms)
    return page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uri")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    args = parser.parse_args()
    server = None
    uri = args.uri
    if uri is None:
        server = EmbeddedServer(prefer_rust=True)
        uri = server.start()
    try:
        capture = Capture()
        database = pymongo.MongoClient(uri, event_listeners=[capture])["mongoqueue_bench_dashboard"]
        database.drop_collection("jobs")
        collection = database["jobs"]
        started = time.perf_counter()
        fill(collection, args.jobs)
        consumer = queue(collection, "bench-worker")
        for n in range(100):  # 100 held, 20 of them failed
            job = consumer.next()
            assert job is not None
            if n < 20:
                job.error("boom")
        print(f"filled {args.jobs:,} jobs in {time.perf_counter() - started:.1f} s\n")
        print("| list (the dashboard's own finds, explained) | finds | plans | keys examined "
              "| docs examined | time (with its count) |")  # fmt: skip
        print("|---|---|---|---|---|---|")
        for state in ("waiting", "running", "failed", "all"):
            listed(f"{state}, first page", database, capture, consumer, queries.Filters(state))
        waiting = queries.Filters("waiting")
        query, sort = queries.job_filter(waiting, consumer._now())
        deep = args.jobs - 1000
        last = collection.find(query, sort=sort, skip=deep, limit=1, projection=dict(sort))[0]
        cursor = queries.encode_cursor(last, sort)
        label = f"waiting, keyset page after job {deep:,}"
        listed(label, database, capture, consumer, waiting, after=cursor)
        skipped = {"find": "jobs", "filter": query, "sort": dict(sort), "skip": deep, "limit": 26}
        started = time.perf_counter()
        list(collection.find(query, sort=sort, skip=deep, limit=PAGE + 1))
        ms = (time.perf_counter() - started) * 1000
        row(f"waiting, skip({deep:,}) (what page numbers would send)", database, [skipped], ms)
        failed_boom = queries.Filters("failed", error="boom")
        listed("failed, error text 'boom'", database, capture, consumer, failed_boom)
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()
